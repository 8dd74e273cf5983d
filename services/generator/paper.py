"""The paper's released CoT files (EIT-NLP/Distilling-CoT-Reasoning, `data/`) as `recorded` CoT sets.

File names carry the dataset, teacher, level and format, e.g. ``SVAMP_ChatGPT_level3_ranked.json``,
``openBookQA_chatgpt_level_2_ranked.json``, ``0_SVAMP_chatgpt_level5BSM.json``,
``openbookqa_chatgpt_rar_level3_ranked.json``, ``stqa_human_annotation.json``, ``SVAMP_only_ans.json``.
`classify` parses one name (pure); `import_paper` writes one CoT set per classified file.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from pydantic import BaseModel

from shared.datasets.base import DatasetError

log = logging.getLogger(__name__)

TEACHERS = {"chatgpt": "gpt-4o", "gemini": "gemini-1.5-flash", "llama": "llama-3-70b", "human": "human"}
FORMATS = {"bsm": "subquestion", "rar": "rar", "sym": "symbolic", "symbolic": "symbolic"}
_DATASETS = {
    "svamp": "svamp", "gsm": "gsm8k", "gsm8k": "gsm8k", "aqua": "aqua", "auqa": "aqua", "math": "math",
    "commonsenseqa": "csqa", "csqa": "csqa", "cqa": "csqa", "openbookqa": "openbookqa", "obqa": "openbookqa",
    "strategyqa": "strategyqa", "stqa": "strategyqa",
}
_IGNORED = {"ranked", "train", "annotation", "mix"}


class PaperFile(BaseModel):
    """What a paper file holds."""

    file: str
    dataset: str
    teacher: str  # gpt-4o, gemini-1.5-flash, llama-3-70b, human, answer-only
    level: int | None = None
    format: str | None = None
    column: str | None = None  # the rationale field, when not the default

    @property
    def name(self) -> str:
        """A folder name for the CoT set."""
        if self.level is None:
            return f"{self.dataset}_{self.teacher}"
        return f"{self.dataset}_{self.teacher}_L{self.level}_{self.format or 'cot'}"


def classify(filename: str) -> PaperFile | None:
    """Dataset, teacher, level and format from a paper file name; None when it is not a CoT file."""
    p = Path(filename)
    if p.suffix.lower() not in (".json", ".jsonl"):
        return None
    tokens = [t for t in p.stem.lower().split("_") if t]
    if tokens and tokens[0] == "0":
        tokens = tokens[1:]
    if not tokens or tokens[0] not in _DATASETS:
        return None
    dataset, rest = _DATASETS[tokens[0]], tokens[1:]
    teacher = level = fmt = None
    i = 0
    while i < len(rest):
        t = rest[i]
        if t in TEACHERS:
            teacher = TEACHERS[t]
        elif t in ("onlyans", "only") and (t == "onlyans" or rest[i + 1 : i + 2] == ["ans"]):
            teacher = "answer-only"
            i += 0 if t == "onlyans" else 1
        elif t in FORMATS:
            fmt = FORMATS[t]
        elif m := re.fullmatch(r"level(\d)?(bsm|rar|sym|symbolic)?", t):
            digit = m.group(1)
            if digit is None and i + 1 < len(rest) and rest[i + 1].isdigit():
                i += 1
                digit = rest[i]
            if digit is None:
                return None
            level = int(digit)
            if m.group(2):
                fmt = FORMATS[m.group(2)]
        elif t not in _IGNORED:
            return None
        i += 1
    if teacher is None or (level is not None and not 1 <= level <= 6):
        return None
    if teacher in ("human", "answer-only"):
        level, fmt = None, None
    elif level is None:
        return None
    column = "solution" if dataset == "math" and teacher == "human" else None
    fmt = fmt or ("cot" if level is not None else None)
    return PaperFile(file=p.name, dataset=dataset, teacher=teacher, level=level, format=fmt, column=column)


def gold_files(folder: Path) -> dict[str, Path]:
    """The answer-only file per dataset in `folder` (the paper's gold answers of the train splits)."""
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        pf = classify(f.name)
        if pf and pf.teacher == "answer-only":
            out[pf.dataset] = f
    return out


def import_paper(folder: Path, out: Path, grade: bool = True) -> dict:
    """Write one `recorded` CoT set per classified file of `folder` under `out`.

    Returns ``{"imported": [{file, dir, dataset, teacher, level, format, items}], "unclassified": [...]}``.
    Items are graded against the folder's answer-only file of the dataset (MATH: each file's own
    ``output`` field) when `grade` is set.
    """
    from services.generator.build import write_cotset
    from shared.cotset import read_cot_file
    from shared.datasets.registry import load_questions
    from shared.specs import CotSetSpec, DatasetRef, TeacherSpec

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    golds = gold_files(folder)
    gold_cache: dict[str, list] = {}
    imported, unclassified, used = [], [], set()
    for f in sorted(folder.iterdir()):
        if not f.is_file():
            continue
        pf = classify(f.name)
        if pf is None:
            unclassified.append(f.name)
            continue
        records = read_cot_file(f, pf.dataset, pf.column)
        questions: list = []
        gold_src = f if pf.dataset == "math" else golds.get(pf.dataset)
        if grade and gold_src is not None:
            key = str(gold_src)
            if key not in gold_cache:
                try:
                    gold_cache[key] = load_questions(pf.dataset, "train", data_file=gold_src, skip_invalid=True)
                except DatasetError as exc:
                    log.warning("%s: no gold answers (%s)", gold_src.name, exc)
                    gold_cache[key] = []
            questions = gold_cache[key]
        name = pf.name if pf.name not in used else f"{pf.name}_{f.stem}"
        used.add(name)
        teacher = TeacherSpec(name=pf.teacher, kind="recorded", files=str(f.resolve()))
        spec = CotSetSpec(
            dataset=DatasetRef(name=pf.dataset), teacher=teacher, level=pf.level,
            format=pf.format, prompt_version="recorded",
        )
        manifest = write_cotset(spec, records, questions, out / name, extra={"paper_file": f.name})
        imported.append({"file": f.name, "dir": name, "dataset": pf.dataset, "teacher": pf.teacher,
                         "level": pf.level, "format": pf.format, "items": manifest["stats"]["items"]})
    summary = {"imported": imported, "unclassified": unclassified}
    out.mkdir(parents=True, exist_ok=True)
    (out / "import.json").write_text(json.dumps(summary, indent=2))
    return summary
