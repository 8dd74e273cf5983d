"""The paper's tables, as markdown and JSON, each cell "acc ± half-CI (n)" in percent.

In tables 1-3 the best cell of each row (highest mean accuracy over seeds) is bold, and ``*`` marks a cell
whose paired items differ significantly from that best cell (exact McNemar, p < 0.05). In table 4 ``*``
marks a gain that is significant against its baseline.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.report.cells import ANSWER_ONLY, COT, HUMAN, Condition, CondKey
from shared.report.compare import ALPHA, Comparer, Comparison

MARK = "*"
SCORING_NOTE = (
    'Scoring: `accuracy`, our flexible extraction (the last "The answer is", then fallbacks); the '
    'section "Strict scoring" gives `accuracy_strict`, the paper\'s.'
)
ROW_LEGEND = (
    f"{SCORING_NOTE} Each cell: accuracy ± half the 95% interval (items scored), in percent; mean over seeds when there are "
    f"several. **Bold**: best in the row. `{MARK}`: differs from the row's best cell, exact McNemar "
    f"p < {ALPHA} on items paired by (seed, question id). No mark where items could not be paired or the "
    f"difference is not significant."
)
GAIN_LEGEND = (
    f"{SCORING_NOTE} Gain: accuracy of the CoT cell minus its baseline (same dataset, student and seed), in percentage "
    f"points, averaged over common seeds. `{MARK}`: exact McNemar p < {ALPHA} on paired items. "
    f"'—': no baseline cell with a common seed."
)
TEACHER_LEVEL_RULE = (
    "the level shared by the most teachers; ties go to the level with more cells, then to the lower level"
)


@dataclass
class TCell:
    """One displayed table cell."""

    text: str
    bold: bool = False


@dataclass
class Table:
    """A table rendered identically to markdown and HTML; ``records`` hold the numbers behind it."""

    id: str
    kind: str
    title: str
    columns: list[str]
    rows: list[list[TCell]]
    records: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        """A GitHub-flavoured markdown table with its title and notes."""
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(_md_escape(c) for c in self.columns) + " |")
        lines.append("|" + "|".join(["---"] * len(self.columns)) + "|")
        for row in self.rows:
            cells = [f"**{_md_escape(c.text)}**" if c.bold and c.text else _md_escape(c.text) for c in row]
            lines.append("| " + " | ".join(cells) + " |")
        for note in self.notes:
            lines.extend(["", note])
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "columns": self.columns,
            "rows": [[c.text for c in row] for row in self.rows],
            "bold": [[c.bold for c in row] for row in self.rows],
            "records": self.records,
            "meta": self.meta,
            "notes": self.notes,
        }


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal."""
    return f"{100.0 * x:.1f}"


def fmt_condition(cond: Condition) -> str:
    """``acc ± half-CI (n)`` in percent."""
    return f"{pct(cond.accuracy)} ± {pct(cond.half_ci)} ({cond.n})"


def fmt_gain(diff: float | None) -> str:
    if diff is None:
        return "—"
    return f"{100.0 * diff:+.1f}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.3g}" if p >= 0.001 else "<0.001"


def _row_with_best(
    label: str, conds: list[Condition | None], comparer: Comparer, candidates: Iterable[int] | None = None
) -> tuple[list[TCell], dict[str, Any]]:
    """Format one row: bold the best candidate, mark cells significantly different from it."""
    idx = list(candidates) if candidates is not None else list(range(len(conds)))
    present = [i for i in idx if conds[i] is not None]
    best_i = None
    if present:
        # max accuracy; ties go to the earliest column (the coarser level / first listed)
        best_i = max(present, key=lambda i: (conds[i].accuracy, -i))  # type: ignore[union-attr]
    cells = [TCell(label)]
    tests: list[dict[str, Any]] = []
    for i, cond in enumerate(conds):
        if cond is None:
            cells.append(TCell("—"))
            continue
        text = fmt_condition(cond)
        if best_i is not None and i != best_i:
            cmp = comparer.compare(conds[best_i], cond)  # type: ignore[arg-type]
            tests.append(_test_record(cmp))
            if cmp.significant:
                text += MARK
        cells.append(TCell(text, bold=(i == best_i)))
    best = conds[best_i].key.to_json() if best_i is not None else None  # type: ignore[union-attr]
    return cells, {"best": best, "tests_vs_best": tests}


def _test_record(cmp: Comparison) -> dict[str, Any]:
    return {
        "against": cmp.b.label(),
        "best": cmp.a.label(),
        "diff": cmp.diff,
        "n_pairs": cmp.n_pairs,
        "mcnemar_p": cmp.p_value,
        "significant": cmp.significant,
        "reason": cmp.reason,
    }


def _cot_groups(conds: dict[CondKey, Condition]) -> dict[tuple[str, str, str], list[Condition]]:
    """Levelled CoT conditions grouped by (dataset, teacher, format)."""
    groups: dict[tuple[str, str, str], list[Condition]] = defaultdict(list)
    for key, cond in conds.items():
        if key.role == COT and key.level is not None:
            groups[(key.dataset, key.teacher, key.format or COT)].append(cond)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != COT, kv[0][2])))


def _baselines(conds: dict[CondKey, Condition], role: str) -> dict[tuple[str, str], Condition]:
    """Baseline conditions (answer-only or human) by (dataset, student); the first teacher wins."""
    out: dict[tuple[str, str], Condition] = {}
    for key, cond in conds.items():
        if key.role == role:
            out.setdefault((key.dataset, key.student), cond)
    return out


def level_tables(conds: dict[CondKey, Condition], comparer: Comparer) -> list[Table]:
    """Table 1: student × granularity level per (dataset, teacher, format), baselines as extra columns.

    Format ``cot`` always gets a table; another format only when it was run at two or more levels.
    """
    answer_only = _baselines(conds, ANSWER_ONLY)
    human = _baselines(conds, HUMAN)
    tables = []
    for (dataset, teacher, fmt), group in _cot_groups(conds).items():
        levels = sorted({c.key.level for c in group})  # type: ignore[type-var]
        if len(levels) < 2 and fmt != COT:
            continue  # a format run at one level is covered by the format table
        students = sorted({c.key.student for c in group})
        has_ao = any((dataset, s) in answer_only for s in students)
        has_h = any((dataset, s) in human for s in students)
        columns = ["student"] + ([ANSWER_ONLY] if has_ao else []) + ([HUMAN] if has_h else [])
        n_base = len(columns) - 1
        columns += [f"L{lv}" for lv in levels]
        by = {(c.key.student, c.key.level): c for c in group}
        rows, records = [], []
        for s in students:
            row: list[Condition | None] = []
            if has_ao:
                row.append(answer_only.get((dataset, s)))
            if has_h:
                row.append(human.get((dataset, s)))
            row += [by.get((s, lv)) for lv in levels]
            cells, info = _row_with_best(s, row, comparer)
            rows.append(cells)
            records.append(
                {
                    "student": s,
                    "answer_only": answer_only[(dataset, s)].to_json()
                    if (dataset, s) in answer_only
                    else None,
                    "human": human[(dataset, s)].to_json() if (dataset, s) in human else None,
                    "levels": {str(lv): by[(s, lv)].to_json() for lv in levels if (s, lv) in by},
                    **info,
                }
            )
        tables.append(
            Table(
                id=_slug("level", dataset, teacher, fmt),
                kind="by_level",
                title=f"Accuracy by granularity level — {dataset}, teacher {teacher}, format {fmt}",
                columns=columns,
                rows=rows,
                records=records,
                meta={
                    "dataset": dataset,
                    "teacher": teacher,
                    "format": fmt,
                    "levels": levels,
                    "baseline_columns": columns[1 : 1 + n_base],
                },
                notes=[ROW_LEGEND],
            )
        )
    return tables


def choose_teacher_level(conds: Iterable[Condition]) -> int | None:
    """The level for the teacher table: see ``TEACHER_LEVEL_RULE``."""
    teachers: dict[int, set[str]] = defaultdict(set)
    counts: Counter[int] = Counter()
    for c in conds:
        if c.key.level is not None:
            teachers[c.key.level].add(c.key.teacher)
            counts[c.key.level] += 1
    if not counts:
        return None
    return max(counts, key=lambda lv: (len(teachers[lv]), counts[lv], -lv))


def teacher_tables(conds: dict[CondKey, Condition], comparer: Comparer) -> list[Table]:
    """Table 2: student × teacher at one level (format ``cot``), per dataset with two or more teachers."""
    by_dataset: dict[str, list[Condition]] = defaultdict(list)
    for key, cond in conds.items():
        if key.role == COT and key.level is not None and (key.format or COT) == COT:
            by_dataset[key.dataset].append(cond)
    tables = []
    for dataset, group in sorted(by_dataset.items()):
        level = choose_teacher_level(group)
        at_level = [c for c in group if c.key.level == level]
        teachers = sorted({c.key.teacher for c in at_level})
        if len(teachers) < 2:
            continue
        students = sorted({c.key.student for c in at_level})
        by = {(c.key.student, c.key.teacher): c for c in at_level}
        rows, records = [], []
        for s in students:
            row = [by.get((s, t)) for t in teachers]
            cells, info = _row_with_best(s, row, comparer)
            rows.append(cells)
            records.append(
                {
                    "student": s,
                    "teachers": {t: by[(s, t)].to_json() for t in teachers if (s, t) in by},
                    **info,
                }
            )
        tables.append(
            Table(
                id=_slug("teacher", dataset, f"L{level}"),
                kind="by_teacher",
                title=f"Accuracy by teacher — {dataset}, level {level}, format cot",
                columns=["student"] + teachers,
                rows=rows,
                records=records,
                meta={
                    "dataset": dataset,
                    "level": level,
                    "format": COT,
                    "teachers": teachers,
                    "level_rule": TEACHER_LEVEL_RULE,
                },
                notes=[f"Level {level} chosen as {TEACHER_LEVEL_RULE}.", ROW_LEGEND],
            )
        )
    return tables


def format_tables(conds: dict[CondKey, Condition], comparer: Comparer) -> list[Table]:
    """Table 3: student × format per (dataset, teacher, level) where two or more formats exist."""
    groups: dict[tuple[str, str, int], list[Condition]] = defaultdict(list)
    for key, cond in conds.items():
        if key.role == COT and key.level is not None:
            groups[(key.dataset, key.teacher, key.level)].append(cond)
    tables = []
    for (dataset, teacher, level), group in sorted(groups.items()):
        formats = sorted({c.key.format or COT for c in group}, key=lambda f: (f != COT, f))
        if len(formats) < 2:
            continue
        students = sorted({c.key.student for c in group})
        by = {(c.key.student, c.key.format or COT): c for c in group}
        rows, records = [], []
        for s in students:
            row = [by.get((s, f)) for f in formats]
            cells, info = _row_with_best(s, row, comparer)
            rows.append(cells)
            records.append(
                {"student": s, "formats": {f: by[(s, f)].to_json() for f in formats if (s, f) in by}, **info}
            )
        tables.append(
            Table(
                id=_slug("format", dataset, teacher, f"L{level}"),
                kind="by_format",
                title=f"Accuracy by format — {dataset}, teacher {teacher}, level {level}",
                columns=["student"] + formats,
                rows=rows,
                records=records,
                meta={"dataset": dataset, "teacher": teacher, "level": level, "formats": formats},
                notes=[ROW_LEGEND],
            )
        )
    return tables


def gain_tables(conds: dict[CondKey, Condition], comparer: Comparer) -> list[Table]:
    """Table 4: each CoT condition's gain over answer-only and over human rationales, per dataset."""
    answer_only = _baselines(conds, ANSWER_ONLY)
    human = _baselines(conds, HUMAN)
    by_dataset: dict[str, list[Condition]] = defaultdict(list)
    for key, cond in conds.items():
        if key.role == COT:
            by_dataset[key.dataset].append(cond)
    tables = []
    for dataset, group in sorted(by_dataset.items()):
        bases = [
            (name, m)
            for name, m in ((ANSWER_ONLY, answer_only), (HUMAN, human))
            if any((dataset, c.key.student) in m for c in group)
        ]
        if not bases:
            continue
        rows, records = [], []
        for cond in group:
            k = cond.key
            rec: dict[str, Any] = {**cond.to_json()}
            row = [
                TCell(k.student),
                TCell(k.teacher),
                TCell("—" if k.level is None else str(k.level)),
                TCell(k.format or "—"),
                TCell(fmt_condition(cond)),
            ]
            for name, base_map in bases:
                base = base_map.get((dataset, k.student))
                if base is None:
                    row += [TCell("—"), TCell("—")]
                    rec[f"vs_{name}"] = None
                    continue
                cmp = comparer.compare(cond, base)
                text = fmt_gain(cmp.diff) + (MARK if cmp.significant and cmp.diff is not None else "")
                row += [TCell(text, bold=cmp.significant and (cmp.diff or 0) > 0), TCell(fmt_p(cmp.p_value))]
                rec[f"vs_{name}"] = {
                    "gain": cmp.diff,
                    "mcnemar_p": cmp.p_value,
                    "significant": cmp.significant,
                    "n_pairs": cmp.n_pairs,
                    "common_seeds": list(cmp.common_seeds),
                    "bootstrap": cmp.bootstrap.to_json() if cmp.bootstrap else None,
                    "reason": cmp.reason,
                }
            rows.append(row)
            records.append(rec)
        tables.append(
            Table(
                id=_slug("gain", dataset),
                kind="gain",
                title=f"Gain over {' and '.join(n for n, _ in bases)} — {dataset}",
                columns=["student", "teacher", "level", "format", "accuracy"]
                + [col for name, _ in bases for col in (f"Δ vs {name} (pp)", f"p vs {name}")],
                rows=rows,
                records=records,
                meta={"dataset": dataset, "baselines": [n for n, _ in bases]},
                notes=[GAIN_LEGEND],
            )
        )
    return tables


def _slug(*parts: Any) -> str:
    text = "-".join(str(p) for p in parts).lower()
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)
