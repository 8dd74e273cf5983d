"""`cotd data export-llamafactory` against LLaMA-Factory 0.9.5's documented `dataset_info.json` schema.

LLaMA-Factory itself is not installed (it pulls CUDA torch and pins older transformers/trl); its
data side is pinned here instead, from its data/README.md and what `get_dataset(stage="sft")` does
with a local alpaca file: each entry is found by its name in the comma-separated `dataset`
argument, read from `file_name` under the dataset folder with `datasets`' JSON builder, its
`columns` map onto its column names (prompt, query, response, ...), and an example is kept only
when the alpaca conversion gives one user turn and one assistant response (a string). The files
are loaded with the real `datasets` package, as LLaMA-Factory does.
"""

from __future__ import annotations

import json
from pathlib import Path

from services.generator.export import export_llamafactory
from shared.cotset import CotRecord

LF_COLUMNS = {
    "prompt",
    "query",
    "response",
    "history",
    "messages",
    "system",
    "tools",
    "images",
    "videos",
    "audios",
    "chosen",
    "rejected",
    "kto_tag",
}
LF_ENTRY_KEYS = {
    "file_name",
    "formatting",
    "ranking",
    "subset",
    "split",
    "folder",
    "num_samples",
    "columns",
    "tags",
    "hf_hub_url",
    "ms_hub_url",
    "om_hub_url",
    "script_url",
    "cloud_file_name",
}


def _cotset(
    folder: Path, dataset: str, teacher: str, level: int, rows: list[tuple[str, str | None, bool]]
) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps({"dataset": dataset, "teacher": teacher, "level": level, "format": "cot"})
    )
    recs = [
        CotRecord(id=str(i), question=q, rationale=r, kept=kept, error=None if r else "timeout")
        for i, (q, r, kept) in enumerate(rows)
    ]
    (folder / "cot.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in recs))
    return folder


def _alpaca_examples(rows: list[dict], columns: dict[str, str]) -> list[tuple[list[str], list[str]]]:
    """(user turns, responses) per row, as LLaMA-Factory's alpaca converter forms them."""
    out = []
    for row in rows:
        query = [row[columns[c]] for c in ("prompt", "query") if c in columns and row[columns[c]]]
        response = [row[columns["response"]]] if isinstance(row.get(columns["response"]), str) else []
        out.append((["\n".join(query)], response))
    return out


def test_export_loads_as_llamafactory_sft_data(tmp_path: Path) -> None:
    from datasets import load_dataset

    sets = [
        _cotset(
            tmp_path / "a",
            "svamp",
            "gpt-4o",
            1,
            [("Q1 ?", "Step. The answer is 2", True), ("Q2 ?", None, False)],
        ),
        _cotset(
            tmp_path / "b",
            "svamp",
            "gpt-4o",
            6,
            [("Q1 ?", "Long. The answer is 2", True), ("Q3 ?", "Wrong. The answer is 9", False)],
        ),
        _cotset(tmp_path / "c", "math", "llama 3/70b", 2, [("Q$ ?", "x. The answer is $4$", True)]),
    ]
    out = tmp_path / "lf"
    export_llamafactory(sets, out)
    info = json.loads((out / "dataset_info.json").read_text())
    assert len(info) == 3
    names = ",".join(info)  # LLaMA-Factory's `dataset:` argument
    assert names.split(",") == list(info) and all(n == n.strip() and n for n in info)
    total = 0
    for name, entry in info.items():
        assert set(entry) <= LF_ENTRY_KEYS and entry.get("formatting", "alpaca") == "alpaca"
        assert not entry.get("ranking", False) and set(entry["columns"]) <= LF_COLUMNS
        path = out / entry["file_name"]
        assert path.parent == out and path.is_file(), name
        ds = load_dataset(
            "json", data_files=str(path), split="train"
        )  # LLaMA-Factory's loader for a local file
        rows = ds.to_list()
        assert set(ds.column_names) == set(entry["columns"].values())
        for users, responses in _alpaca_examples(rows, entry["columns"]):
            assert len(users) % 2 == 1 and len(responses) == 1 and responses[0].strip()  # kept by get_dataset
        total += len(rows)
    assert total == 3  # kept items only; failed and filtered ones are not exported


def test_export_all_keeps_filtered_but_never_failed(tmp_path: Path) -> None:
    s = _cotset(
        tmp_path / "a",
        "svamp",
        "t",
        1,
        [("Q1", "r. The answer is 1", True), ("Q2", "r. The answer is 3", False), ("Q3", None, False)],
    )
    info = export_llamafactory([s], tmp_path / "lf", include_all=True)
    rows = json.loads((tmp_path / "lf" / next(iter(info.values()))["file_name"]).read_text())
    assert [r["instruction"] for r in rows] == ["Q1", "Q2"]
