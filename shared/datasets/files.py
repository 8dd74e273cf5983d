"""Generic reading of dataset files (JSON / JSONL) and Hugging Face hub splits.

Every item comes back as a `Record`: the item's fields plus where it came from, so that a
malformed item raises a one-line `DatasetError` naming the file, the line (JSONL) or index
(JSON) and the field, e.g. ``gsm8k_test.jsonl: line 7: missing field 'answer'``.

Hub access (`hub_records`) goes through `datasets.load_dataset`. For machines without network
(and for tests) set ``COTD_HF_DATASETS_MIRROR`` to a folder laid out as::

    <mirror>/<owner>__<name>[__<config>]/<split>/      a `Dataset.save_to_disk` folder, or
    <mirror>/<owner>__<name>[__<config>]/<split>.jsonl  (or .json) a plain file

When the variable is set the mirror is used exclusively; a missing split is a `DatasetError`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.datasets.base import DatasetError, Question, TaskType, make_question, parse_choices
from shared.errors import first_line

log = logging.getLogger(__name__)

MIRROR_ENV = "COTD_HF_DATASETS_MIRROR"
CACHE_ENV = "COTD_DATA_CACHE"

_MISSING = object()


@dataclass(frozen=True)
class Record:
    """One raw item of a dataset file, with its location for error messages."""

    source: str  # file name (or hub id and split)
    where: str  # "line 7" or "index 3"
    data: dict[str, Any]

    def error(self, message: str) -> DatasetError:
        """A `DatasetError` located at this item."""
        return DatasetError(f"{self.source}: {self.where}: {message}")

    def has(self, name: str) -> bool:
        """Whether the item has a non-null field `name`."""
        return self.data.get(name) is not None

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The raw value of field `name`; a missing field raises unless a default is given."""
        value = self.data.get(name)
        if value is None:
            if default is not _MISSING:
                return default
            raise self.error(f"missing field '{name}'")
        return value

    def text(self, name: str, *, allow_empty: bool = False) -> str:
        """Field `name` as a string (numbers are converted); empty strings are errors by default."""
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(f"field '{name}' must be a string, got {type(value).__name__}")
        out = str(value)
        if not allow_empty and not out.strip():
            raise self.error(f"field '{name}' is empty")
        return out


def read_records(path: str | Path) -> list[Record]:
    """Read a JSON list or a JSONL file of objects; the format is detected from the content."""
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{p.name}: cannot read: {exc}") from None
    stripped = raw.lstrip()
    if not stripped:
        raise DatasetError(f"{p.name}: file is empty")
    if stripped[0] == "[":
        return _records_from_json(p.name, raw)
    if stripped[0] == "{" and p.suffix.lower() == ".json":
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            return _records_from_jsonl(p.name, raw)  # a .json file holding JSON Lines
        return _records_from_container(p.name, obj)
    return _records_from_jsonl(p.name, raw)


def _records_from_json(name: str, raw: str) -> list[Record]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{name}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    return _records_from_container(name, obj)


def _records_from_container(name: str, obj: Any) -> list[Record]:
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DatasetError(f"{name}: expected a JSON list of objects, got an object")
        obj = lists[0]
    if not isinstance(obj, list):
        raise DatasetError(f"{name}: expected a JSON list of objects, got {type(obj).__name__}")
    out = []
    for i, item in enumerate(obj):
        if not isinstance(item, dict):
            raise DatasetError(f"{name}: index {i}: expected an object, got {type(item).__name__}")
        out.append(Record(name, f"index {i}", item))
    return out


def _records_from_jsonl(name: str, raw: str) -> list[Record]:
    out = []
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{name}: line {lineno}: invalid JSON: {exc.msg}") from None
        if not isinstance(item, dict):
            raise DatasetError(f"{name}: line {lineno}: expected an object, got {type(item).__name__}")
        out.append(Record(name, f"line {lineno}", item))
    return out


def records_from_rows(source: str, rows: Iterable[dict[str, Any]]) -> list[Record]:
    """Wrap in-memory rows (e.g. a hub split) as records located by index."""
    return [Record(source, f"index {i}", dict(row)) for i, row in enumerate(rows)]


def hub_records(hub_id: str, config: str | None, split: str) -> list[Record]:
    """Rows of a Hugging Face hub dataset split (or of its local mirror, see module docstring)."""
    source = f"{hub_id}{'/' + config if config else ''}[{split}]"
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return _mirror_records(Path(mirror), hub_id, config, split, source)
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a declared dependency
        raise DatasetError(f"{source}: the 'datasets' package is not installed: {exc}") from None
    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # network, auth, unknown split: one clear line
        first = first_line(exc)
        raise DatasetError(
            f"{source}: cannot load from the Hugging Face hub ({first}); "
            f"pass a local data file or set {MIRROR_ENV}"
        ) from None
    return records_from_rows(source, ds)


def _mirror_records(mirror: Path, hub_id: str, config: str | None, split: str, source: str) -> list[Record]:
    base = mirror / (hub_id.replace("/", "__") + (f"__{config}" if config else ""))
    folder = base / split
    if folder.is_dir():
        import datasets

        return records_from_rows(source, datasets.load_from_disk(str(folder)))
    for suffix in (".jsonl", ".json"):
        f = base / f"{split}{suffix}"
        if f.is_file():
            return read_records(f)
    raise DatasetError(f"{source}: not found in the mirror {mirror} (looked for {folder}[.jsonl|.json])")


def cache_dir() -> Path:
    """Where downloaded release files are cached (``COTD_DATA_CACHE`` or ~/.cache/cotd/data)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cotd" / "data")


def download_cached(url: str, filename: str) -> Path:
    """Download `url` once into the cache (a mirror folder, if set, is looked at first)."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        p = Path(mirror) / filename
        if p.is_file():
            return p
        raise DatasetError(f"{filename}: not found in the mirror {mirror}")
    target = cache_dir() / filename
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DatasetError(
            f"{url}: download failed ({exc}); pass a local data file or set {MIRROR_ENV}"
        ) from None
    tmp.replace(target)
    return target


# --- the paper's alpaca-style items (shared by every dataset) -----------------------------------


def gold_from_text(
    rec: Record, field: str, task: TaskType, choices: list[str] | None
) -> tuple[str, str | None]:
    """(gold, rationale) from an answer field: a rationale ending "The answer is X", or X alone."""
    from shared.answers import canonical_gold, extract_answer

    raw = rec.text(field)
    stated = re.search(r"answer\s+is", raw, re.I) or "\\boxed" in raw
    if not stated:
        gold = canonical_gold(raw, task, choices)
        if gold_is_valid(gold, task, choices):
            return gold, None
    ext = extract_answer(raw, task, choices)  # a rationale: its stated answer, else the fallbacks
    if ext.value is None:
        raise rec.error(f"field '{field}': no {task.value} answer found in {raw.strip()[:50]!r}")
    return ext.value, raw.strip()


def gold_is_valid(gold: str, task: TaskType, choices: list[str] | None = None) -> bool:
    """Whether a canonical gold answer has the shape its task needs."""
    from shared.answers import canonical_choice, canonical_number, canonical_yesno

    if task is TaskType.NUMBER:
        return canonical_number(gold) is not None
    if task is TaskType.CHOICE:
        return canonical_choice(gold, choices) is not None
    if task is TaskType.YESNO:
        return canonical_yesno(gold) is not None
    return bool(gold.strip())


def alpaca_question(
    rec: Record, dataset: str, task: TaskType, question_field: str = "instruction"
) -> Question:
    """A `Question` from ``{instruction, output}`` (the paper's files) or ``{instruction, label}``.

    A `label` is the gold answer (the paper's evaluation files); otherwise `output` is either the
    answer alone (``*_only_ans``) or a rationale ending "The answer is X" (kept as `rationale`).
    """
    text = rec.text(question_field)
    choices = None
    if task is TaskType.CHOICE:
        choices = parse_choices(text)
        if choices is None:
            raise rec.error(f"field '{question_field}': no 'Answer choices:' options found")
    if rec.has("label"):
        gold, _ = gold_from_text(rec, "label", task, choices)
        out = str(rec.get("output", "") or "")
        rationale = out if re.search(r"answer\s+is", out, re.I) else None
    else:
        gold, rationale = gold_from_text(rec, "output", task, choices)
    return make_question(dataset, text, gold, task, choices, rationale)


def load_file(
    path: str | Path, parse: Callable[[Record], Question], skip_invalid: bool = False
) -> list[Question]:
    """Read a data file and parse each record.

    A malformed item raises a located `DatasetError`, or with `skip_invalid` is logged and skipped
    (some of the paper's answer files hold a few unanswerable items).
    """
    out = []
    for rec in read_records(path):
        try:
            out.append(parse(rec))
        except DatasetError as exc:
            if not skip_invalid:
                raise
            log.warning("skipping invalid item: %s", exc)
    return out
