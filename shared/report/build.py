"""Build the report: read cells, run the analyses, write report.md, report.json, report.html and PNGs.

``build_report`` takes the results and two loaders, so any artifact store can feed it;
``report_from_dir`` wires it to a local run folder (``DIR/results.json`` + ``DIR/artifacts/``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.errors import CotdError
from shared.report.cells import Cell, normalise_cell
from shared.report.cells import group_conditions as _group
from shared.report.compare import ALPHA, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, Comparer
from shared.report.cotstats import collect_set_stats, cot_tables
from shared.report.document import Section, to_markdown
from shared.report.html import render_html
from shared.report.plots import FORMAT_PLOT, LEVEL_PLOT, TEACHER_PLOT, write_plots
from shared.report.recommend import recommendations
from shared.report.strict import strict_tables
from shared.report.tables import (
    TEACHER_LEVEL_RULE,
    Table,
    TCell,
    format_tables,
    gain_tables,
    level_tables,
    teacher_tables,
)

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"

PredictionsLoader = Callable[[str], "list[dict] | None"]
CotStatsLoader = Callable[[str], "dict | None"]


class ReportInputError(CotdError, ValueError):
    """The results file is missing, unreadable or not a results document."""


def resolve_results_path(dir_or_file: str | Path) -> Path:
    """``DIR/results.json`` for a folder, the path itself for a file."""
    p = Path(dir_or_file)
    if p.is_dir():
        return p / "results.json"
    return p


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and check a results file; raise ``ReportInputError`` naming the file when it is unusable."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ReportInputError(f"{p}: no such results file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"{p}: cannot read results file ({exc})") from exc
    try:
        results = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportInputError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    _check_results(results, str(p))
    return results


def _check_results(results: Any, where: str) -> None:
    if not isinstance(results, dict) or not isinstance(results.get("cells"), list):
        raise ReportInputError(f"{where}: not a results document (expected an object with a 'cells' list)")


def read_predictions(path: Path) -> list[dict] | None:
    """Rows of a predictions.jsonl (blank lines skipped); None when the file is absent."""
    if not path.is_file():
        return None
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: {exc.msg}") from exc
    return rows


def _stats_of(manifest: Any) -> dict | None:
    stats = manifest.get("stats") if isinstance(manifest, dict) else None
    return stats if isinstance(stats, dict) else None


def dir_predictions_loader(artifacts: Path) -> PredictionsLoader:
    """Loader of ``artifacts/evals/<eval_key>/predictions.jsonl``; None when the file is absent."""
    return lambda eval_key: read_predictions(artifacts / "evals" / eval_key / "predictions.jsonl")


def dir_cot_stats_loader(artifacts: Path) -> CotStatsLoader:
    """Loader of the ``stats`` dict of ``artifacts/cotsets/<cot_key>/manifest.json``."""

    def load(cot_key: str) -> dict | None:
        path = artifacts / "cotsets" / cot_key / "manifest.json"
        if not path.is_file():
            return None
        try:
            return _stats_of(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: {exc.msg}") from exc

    return load


def store_loaders(store: Any) -> tuple[PredictionsLoader, CotStatsLoader]:
    """Loaders over an artifact store with ``manifest(kind, key)`` and ``fetch(kind, key) -> Path``.

    An artifact without a manifest counts as absent (the store publishes the manifest last).
    """

    def predictions(eval_key: str) -> list[dict] | None:
        if store.manifest("evals", eval_key) is None:
            return None
        return read_predictions(Path(store.fetch("evals", eval_key)) / "predictions.jsonl")

    def cot_stats(cot_key: str) -> dict | None:
        return _stats_of(store.manifest("cotsets", cot_key))

    return predictions, cot_stats


def _missing_table(cells: list[Cell]) -> Table:
    cols = ["dataset", "teacher", "level", "format", "student", "seed", "status", "reason"]
    rows, records = [], []
    for c in cells:
        d = c.describe()
        records.append(d)
        rows.append([TCell("—" if d.get(k) is None else str(d.get(k))) for k in cols])
    return Table(
        id="missing-cells", kind="missing", title="Missing cells", columns=cols, rows=rows, records=records
    )


def _json_safe(obj: Any) -> Any:
    """Non-finite floats become None, so report.json stays strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def build_report(
    results: dict[str, Any],
    predictions_loader: PredictionsLoader,
    cot_stats_loader: CotStatsLoader,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Analyse ``results`` and write report.md, report.json, report.html and the PNGs into ``out_dir``.

    ``predictions_loader(eval_key)`` returns the per-item rows (``id``, ``correct``) or None;
    ``cot_stats_loader(cot_key)`` returns a CoT set's stats dict or None. Returns the report.json content.
    """
    _check_results(results, "results")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = results.get("grid") if isinstance(results.get("grid"), dict) else {}
    grid_name = str(grid.get("name") or "unnamed grid")

    cells = [normalise_cell(i, raw) for i, raw in enumerate(results["cells"])]
    conds = _group(cells)
    missing = [c for c in cells if c.missing]
    comparer = Comparer(predictions_loader)
    warnings = comparer.warnings

    t_level = level_tables(conds, comparer)
    t_teacher = teacher_tables(conds, comparer)
    t_format = format_tables(conds, comparer)
    t_gain = gain_tables(conds, comparer)
    t_strict = strict_tables(conds)
    recs = recommendations(conds, comparer)
    set_stats = collect_set_stats(conds, cot_stats_loader, warnings)
    t_stats, t_corr, corr_records = cot_tables(conds, set_stats)
    written, skipped = write_plots(t_level + t_teacher + t_format, out)

    datasets = sorted({k.dataset for k in conds})
    students = sorted({k.student for k in conds})
    seeds = sorted({str(c.seed) for cond in conds.values() for c in cond.cells})
    conventions = {
        "alpha": ALPHA,
        "test": "exact two-sided McNemar (binomial on discordant pairs), items paired by (seed, question id), "
        "pooled over the seeds both conditions ran",
        "bootstrap": {
            "resamples": BOOTSTRAP_RESAMPLES,
            "seed": BOOTSTRAP_SEED,
            "statistic": "mean paired difference A - B over items",
        },
        "accuracy": "mean over seeds of `accuracy`, our flexible extraction, in every table but the strict one",
        "accuracy_strict": "the paper's strict extraction (its regex for commonsense sets, MAmmoTH's "
        "answer_clean for math), in the strict-scoring tables",
        "interval": "the cell's own 95% interval for one seed; Wilson interval of pooled counts for several",
        "best_ties": "coarser level / first listed column",
        "teacher_table_level": TEACHER_LEVEL_RULE,
    }

    overview = Section(
        "Overview",
        "overview",
        paragraphs=[
            f"Grid **{grid_name}**: {len(cells)} cells, {len(cells) - len(missing)} done, {len(missing)} missing; "
            f"{len(conds)} conditions over {len(datasets)} dataset(s) ({', '.join(datasets) or '—'}), "
            f"{len(students)} student(s) and {len(seeds)} seed(s).",
            "Accuracy is the mean over seeds with a 95% interval, scored by our flexible extraction "
            '(`accuracy`) in every table and test; "Strict scoring" sets the paper\'s strict extraction '
            f"(`accuracy_strict`) beside it. Significance: {conventions['test']}, "
            f"p < {ALPHA}. A difference that is not significant is reported as such: at small scale it may be "
            f"seed noise, not a finding.",
        ],
    )
    rec_bullets = [f"**{r['student']}** on {r['dataset']}: " + " ".join(r["text"]) for r in recs]
    sections = [
        overview,
        Section(
            "Recommendations",
            "recommendations",
            bullets=rec_bullets,
            paragraphs=[] if recs else ["No CoT cells were done, so there is nothing to recommend."],
        ),
        Section(
            "Accuracy by granularity level",
            "levels",
            tables=t_level,
            figures=[LEVEL_PLOT] if LEVEL_PLOT in written else [],
            paragraphs=[] if t_level else [f"Skipped: {skipped.get(LEVEL_PLOT, 'no data')}."],
        ),
        Section(
            "Teacher comparison",
            "teachers",
            tables=t_teacher,
            figures=[TEACHER_PLOT] if TEACHER_PLOT in written else [],
            paragraphs=[] if t_teacher else [f"Skipped: {skipped.get(TEACHER_PLOT, 'no data')}."],
        ),
        Section(
            "Format comparison",
            "formats",
            tables=t_format,
            figures=[FORMAT_PLOT] if FORMAT_PLOT in written else [],
            paragraphs=[] if t_format else [f"Skipped: {skipped.get(FORMAT_PLOT, 'no data')}."],
        ),
        Section(
            "Gain over the baselines",
            "gains",
            tables=t_gain,
            paragraphs=[] if t_gain else ["Skipped: no answer-only or human cell to compare with."],
        ),
        Section(
            "Strict scoring",
            "strict",
            tables=t_strict,
            paragraphs=[] if t_strict else ["Skipped: the results carry no strict accuracy."],
        ),
        Section(
            "CoT set statistics",
            "cot-stats",
            tables=t_stats + t_corr,
            paragraphs=[] if t_stats else ["Skipped: no CoT set among the done cells."],
        ),
        Section(
            "Missing cells",
            "missing",
            tables=[_missing_table(missing)] if missing else [],
            paragraphs=[] if missing else ["None: every cell is done."],
        ),
    ]
    if skipped:
        sections.append(
            Section(
                "Figures not written", "skipped-figures", bullets=[f"`{k}`: {v}" for k, v in skipped.items()]
            )
        )
    if warnings:
        sections.append(Section("Warnings", "warnings", bullets=list(dict.fromkeys(warnings))))

    title = f"cotd report — {grid_name}"
    all_tables = t_level + t_teacher + t_format + t_gain + t_strict + t_stats + t_corr
    report: dict[str, Any] = {
        "grid": grid_name,
        "conventions": conventions,
        "summary": {
            "cells": len(cells),
            "done": len(cells) - len(missing),
            "missing": len(missing),
            "conditions": len(conds),
            "datasets": datasets,
            "students": students,
            "seeds": seeds,
        },
        "conditions": [c.to_json() for c in conds.values()],
        "tables": [t.to_json() for t in all_tables],
        "tests": [c.to_json() for c in comparer.all_comparisons()],
        "recommendations": recs,
        "cot_sets": [r for t in t_stats for r in t.records],
        "correlations": corr_records,
        "missing_cells": [c.describe() for c in missing],
        "plots": {"written": written, "skipped": skipped},
        "warnings": list(dict.fromkeys(warnings)),
        "files": [REPORT_MD, REPORT_JSON, REPORT_HTML, *written],
    }
    report = _json_safe(report)
    (out / REPORT_MD).write_text(to_markdown(title, sections), encoding="utf-8")
    (out / REPORT_JSON).write_text(
        json.dumps(report, indent=2, default=str, allow_nan=False) + "\n", encoding="utf-8"
    )
    (out / REPORT_HTML).write_text(render_html(title, sections, out), encoding="utf-8")
    return report


def report_from_dir(path: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Report on a run folder (or its results.json); output goes to ``out_dir`` or the results' folder."""
    results_path = resolve_results_path(path)
    results = load_results(results_path)
    artifacts = results_path.parent / "artifacts"
    return build_report(
        results,
        dir_predictions_loader(artifacts),
        dir_cot_stats_loader(artifacts),
        Path(out_dir) if out_dir is not None else results_path.parent,
    )
