"""StrategyQA: yes/no questions needing implicit reasoning (gold ``True`` / ``False``).

There is no labelled hub test split: the source is the authors' release,
``strategyqa_dataset.zip`` (`RELEASE_URL`), whose ``strategyqa_train.json`` holds 2290 labelled
questions. The paper's split, checked against its released files, is the first 2000 for training and
the last 290 for testing. The download is cached (``COTD_DATA_CACHE``); with
``COTD_HF_DATASETS_MIRROR`` set, the zip is read from that folder instead. The human rationale is the
item's ``facts`` followed by "The answer is True/False".
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from shared.answers import canonical_yesno
from shared.datasets.base import DatasetError, Question, make_question
from shared.datasets.files import Record, alpaca_question, download_cached, load_file, records_from_rows
from shared.datasets.registry import DATASETS

NAME = "strategyqa"
TASK = DATASETS[NAME].task
RELEASE_URL = "https://storage.googleapis.com/ai2i/strategyqa/data/strategyqa_dataset.zip"
RELEASE_FILE = "strategyqa_dataset.zip"
TRAIN_MEMBER = "strategyqa_train.json"
N_TRAIN = 2000


def from_record(rec: Record) -> Question:
    """Parse one StrategyQA item (release item, evaluation file or alpaca)."""
    if rec.has("question") and "answer" in rec.data:
        gold = canonical_yesno(rec.get("answer"))
        if gold is None:
            raise rec.error(f"field 'answer': not a yes/no answer: {rec.get('answer')!r}")
        facts = rec.get("facts", [])
        rationale = None
        if isinstance(facts, list) and facts:
            rationale = " ".join(str(f).strip() for f in facts) + f" The answer is {gold}"
        return make_question(NAME, rec.text("question"), gold, TASK, None, rationale)
    return alpaca_question(rec, NAME, TASK)


def load_from_file(path: str | Path, split: str = "test", skip_invalid: bool = False) -> list[Question]:
    """StrategyQA questions from a local file (the release's ``strategyqa_train.json`` is split)."""
    questions = load_file(path, from_record, skip_invalid)
    if Path(path).name == TRAIN_MEMBER:
        return _split(questions, split)
    return questions


def _split(questions: list[Question], split: str) -> list[Question]:
    if split == "train":
        return questions[:N_TRAIN]
    if split == "test":
        return questions[N_TRAIN:]
    if split == "all":
        return questions
    raise DatasetError(f"strategyqa: unknown split {split!r} (train, test or all)")


def load_from_hub(split: str = "test") -> list[Question]:
    """StrategyQA from the authors' release (downloaded once): `train` (2000) or `test` (290)."""
    url = os.environ.get("COTD_STRATEGYQA_URL", RELEASE_URL)
    archive = download_cached(url, RELEASE_FILE)
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith(TRAIN_MEMBER)]
            if not names:
                raise DatasetError(f"{archive.name}: no {TRAIN_MEMBER} inside")
            rows = json.loads(zf.read(names[0]).decode("utf-8"))
    except (zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise DatasetError(f"{archive.name}: cannot read {TRAIN_MEMBER}: {exc}") from None
    if not isinstance(rows, list):
        raise DatasetError(f"{TRAIN_MEMBER}: expected a JSON list of questions")
    questions = [from_record(r) for r in records_from_rows(TRAIN_MEMBER, rows)]
    return _split(questions, split)
