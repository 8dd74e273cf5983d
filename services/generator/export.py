"""Export CoT sets for LLaMA-Factory: alpaca JSON files plus a `dataset_info.json` registry."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared.cotset import COT_FILE, CotRecord

DATASET_INFO = "dataset_info.json"


def _set_name(folder: Path, manifest: dict) -> str:
    if manifest.get("dataset") and manifest.get("teacher"):
        lvl = f"level{manifest['level']}" if manifest.get("level") is not None else "nolevel"
        raw = f"{manifest['dataset']}_{manifest['teacher']}_{lvl}_{manifest.get('format') or 'cot'}"
    else:
        raw = folder.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-") or "cotset"


def read_cotset(folder: Path) -> tuple[dict, list[CotRecord]]:
    """(manifest, records) of a CoT set folder (a bare cot.jsonl has an empty manifest)."""
    folder = Path(folder)
    cot = folder / COT_FILE if folder.is_dir() else folder
    if not cot.exists():
        raise ValueError(f"{folder}: no {COT_FILE} (not a CoT set)")
    mpath = cot.parent / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    records = []
    for n, line in enumerate(cot.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(CotRecord.model_validate_json(line))
            except ValueError as exc:
                raise ValueError(f"{cot}: line {n}: not a CoT record: {str(exc).splitlines()[0]}") from None
    return manifest, records


def export_llamafactory(cotsets: list[Path], out: Path, include_all: bool = False) -> dict:
    """Write `<name>.json` (instruction/input/output) per CoT set and `dataset_info.json`; return the registry.

    Only kept items are exported unless `include_all` (failed items never are). An existing
    `dataset_info.json` in `out` is extended, not replaced.
    """
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / DATASET_INFO
    info: dict = json.loads(info_path.read_text()) if info_path.exists() else {}
    written: dict = {}
    for folder in cotsets:
        manifest, records = read_cotset(Path(folder))
        name = base = _set_name(Path(folder), manifest)
        k = 2
        while name in written:
            name, k = f"{base}-{k}", k + 1
        rows = [
            {"instruction": r.question, "input": "", "output": r.rationale}
            for r in records
            if r.error is None and r.rationale and (include_all or r.kept)
        ]
        (out / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1))
        written[name] = {
            "file_name": f"{name}.json",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        }
    info |= written
    info_path.write_text(json.dumps(info, indent=2))
    return written
