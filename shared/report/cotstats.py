"""CoT set statistics beside the results, and their correlation with student accuracy.

The paper's third finding is that teacher accuracy alone does not predict how well a student learns from
a set; this module puts the numbers side by side so the reader can check that on their own grid.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from shared.report.cells import ANSWER_ONLY, Condition, CondKey
from shared.report.stats import pearson, spearman
from shared.report.tables import Table, TCell, pct

STAT_KEYS = ("teacher_accuracy", "mean_tokens", "mean_words", "mean_steps", "distinct_2")
ALL_KEYS = (*STAT_KEYS, "items")

CotStatsLoader = Callable[[str], "dict | None"]

SetKey = tuple[str, str, str, int | None, str | None]  # dataset, role, teacher, level, format


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def collect_set_stats(
    conds: dict[CondKey, Condition], loader: CotStatsLoader, warnings: list[str]
) -> dict[SetKey, dict[str, Any]]:
    """Statistics of each CoT set (one per dataset/teacher/level/format); cell first, then the manifest."""
    out: dict[SetKey, dict[str, Any]] = {}
    for key, cond in conds.items():
        if key.role == ANSWER_ONLY:
            continue
        sk: SetKey = (key.dataset, key.role, key.teacher, key.level, key.format)
        entry = out.setdefault(sk, {"cot_keys": [], **{k: None for k in ALL_KEYS}})
        for cell in cond.cells:
            if cell.cot_key and cell.cot_key not in entry["cot_keys"]:
                entry["cot_keys"].append(cell.cot_key)
            sources = [cell.raw.get("cot_stats")]
            if any(entry[k] is None for k in ALL_KEYS) and cell.cot_key:
                try:
                    sources.append(loader(cell.cot_key))
                except (OSError, ValueError) as exc:
                    warnings.append(f"manifest of CoT set {cell.cot_key} unreadable: {exc}")
            for stats in sources:
                if not isinstance(stats, dict):
                    continue
                for k in ALL_KEYS:
                    if entry[k] is None:
                        entry[k] = _num(stats.get(k))
    return out


def _fmt_stat(name: str, value: float | None) -> str:
    if value is None:
        return "—"
    if name == "teacher_accuracy":
        return pct(value)
    if name == "items":
        return str(int(value))
    if name == "distinct_2":
        return f"{value:.3f}"
    return f"{value:.1f}"


def _fmt_r(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def cot_tables(
    conds: dict[CondKey, Condition], set_stats: dict[SetKey, dict[str, Any]]
) -> tuple[list[Table], list[Table], list[dict[str, Any]]]:
    """Per dataset: a table of set statistics with each student's accuracy, and a correlation table.

    Returns (stats tables, correlation tables, correlation records).
    """
    acc: dict[SetKey, dict[str, float]] = defaultdict(dict)
    for key, cond in conds.items():
        if key.role != ANSWER_ONLY:
            acc[(key.dataset, key.role, key.teacher, key.level, key.format)][key.student] = cond.accuracy
    datasets = sorted({sk[0] for sk in set_stats})
    stat_tables, corr_tables, corr_records = [], [], []
    for ds in datasets:
        sets = sorted(
            (sk for sk in set_stats if sk[0] == ds),
            key=lambda sk: (sk[1], sk[2], -1 if sk[3] is None else sk[3], sk[4] or ""),
        )
        students = sorted({s for sk in sets for s in acc.get(sk, {})})
        rows, records = [], []
        for sk in sets:
            st = set_stats[sk]
            _, role, teacher, level, fmt = sk
            rows.append(
                [TCell(teacher), TCell("—" if level is None else str(level)), TCell(fmt or "—")]
                + [TCell(_fmt_stat(k, st[k])) for k in ALL_KEYS]
                + [TCell(pct(acc[sk][s]) if s in acc.get(sk, {}) else "—") for s in students]
            )
            records.append(
                {
                    "dataset": ds,
                    "role": role,
                    "teacher": teacher,
                    "level": level,
                    "format": fmt,
                    **{k: st[k] for k in ALL_KEYS},
                    "cot_keys": st["cot_keys"],
                    "student_accuracy": dict(acc.get(sk, {})),
                }
            )
        stat_tables.append(
            Table(
                id=f"cotstats-{ds}".lower(),
                kind="cot_stats",
                title=f"CoT set statistics — {ds}",
                columns=[
                    "teacher",
                    "level",
                    "format",
                    "teacher acc (%)",
                    "mean tokens",
                    "mean words",
                    "mean steps",
                    "distinct-2",
                    "items",
                ]
                + [f"{s} acc (%)" for s in students],
                rows=rows,
                records=records,
                meta={"dataset": ds},
                notes=["Student accuracy is the mean over seeds, in percent; '—': not available."],
            )
        )
        scopes: list[tuple[str, list[str]]] = [("all students", students)]
        if len(students) > 1:
            scopes += [(s, [s]) for s in students]
        crows, crecs = [], []
        for scope, members in scopes:
            row = [TCell(scope)]
            rec: dict[str, Any] = {"dataset": ds, "scope": scope}
            for stat in STAT_KEYS:
                xs, ys = [], []
                for sk in sets:
                    x = set_stats[sk][stat]
                    for s in members:
                        if x is not None and s in acc.get(sk, {}):
                            xs.append(x)
                            ys.append(acc[sk][s])
                r, rho = pearson(xs, ys), spearman(xs, ys)
                rec[stat] = {"pearson": r, "spearman": rho, "n": len(xs)}
                row.append(TCell(f"{_fmt_r(r)} / {_fmt_r(rho)} ({len(xs)})"))
            crows.append(row)
            crecs.append(rec)
        corr_records += crecs
        if all(rec[stat]["n"] < 3 for rec in crecs for stat in STAT_KEYS):
            continue  # nothing to correlate: no statistic known for three or more (set, student) points
        corr_tables.append(
            Table(
                id=f"cotcorr-{ds}".lower(),
                kind="cot_correlation",
                title=f"Correlation of CoT set statistics with student accuracy — {ds}",
                columns=["scope"] + list(STAT_KEYS),
                rows=crows,
                records=crecs,
                meta={"dataset": ds},
                notes=[
                    "Each cell: Pearson r / Spearman ρ (points), over (CoT set, student) pairs. "
                    "'—': fewer than 3 points or a constant statistic. Few points make these unstable."
                ],
            )
        )
    return stat_tables, corr_tables, corr_records
