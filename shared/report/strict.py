"""The strict-scoring table: our flexible accuracy beside the paper's strict one, per condition.

`accuracy` is our extraction (the last "The answer is", then fallbacks to the last True/False, the last
number or an option's text); `accuracy_strict` is the paper's (its regex ``[Tt]he answer is
([A-E]|True|False)`` for commonsense sets, MAmmoTH's ``answer_clean`` for math). Both count an
unparsed answer as wrong; both are means over seeds.
"""

from __future__ import annotations

from collections import defaultdict

from shared.report.cells import Condition, CondKey
from shared.report.tables import Table, TCell, pct

STRICT_LEGEND = (
    'Scoring: `accuracy` is ours (flexible: the last "The answer is", then the last True/False, the last '
    "number or an option's text); `accuracy_strict` is the paper's (the regex `[Tt]he answer is "
    "([A-E]|True|False)` for commonsense sets, MAmmoTH's `answer_clean` for math). Both in percent, mean "
    "over seeds; an unparsed answer is wrong in both. Δ = strict − ours, in points."
)


def strict_tables(conds: dict[CondKey, Condition]) -> list[Table]:
    """One table per dataset whose conditions all report the strict accuracy."""
    by_dataset: dict[str, list[Condition]] = defaultdict(list)
    for key, cond in conds.items():
        by_dataset[key.dataset].append(cond)
    tables = []
    for dataset, group in sorted(by_dataset.items()):
        if any(c.accuracy_strict is None for c in group):
            continue
        rows, records = [], []
        for c in group:
            k = c.key
            strict = c.accuracy_strict or 0.0
            rows.append(
                [
                    TCell(k.student),
                    TCell(k.label()),
                    TCell(pct(c.accuracy)),
                    TCell(pct(strict)),
                    TCell(f"{100.0 * (strict - c.accuracy):+.1f}"),
                ]
            )
            records.append(
                k.to_json() | {"accuracy": c.accuracy, "accuracy_strict": strict, "seeds": c.seeds}
            )
        tables.append(
            Table(
                id=f"strict-{dataset}",
                kind="strict",
                title=f"Our scoring and the paper's strict scoring — {dataset}",
                columns=["student", "condition", "accuracy (ours)", "accuracy_strict (paper)", "Δ (pp)"],
                rows=rows,
                records=records,
                meta={"dataset": dataset},
                notes=[STRICT_LEGEND],
            )
        )
    return tables
