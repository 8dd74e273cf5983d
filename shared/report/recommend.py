"""Per-student recommendations: best level, format and teacher, with honest significance.

Choices use the mean accuracy over seeds; ties go to the coarser level (shorter rationales are cheaper) or
the first listed teacher/format. A choice is called significant only when the exact McNemar test on paired
items gives p < 0.05; otherwise the text says "not significant".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from shared.report.cells import ANSWER_ONLY, COT, Condition, CondKey
from shared.report.compare import Comparer, Comparison
from shared.report.tables import choose_teacher_level, fmt_p, pct

_EPS = 1e-12


def level_pattern(levels: Sequence[int], accuracies: Sequence[float]) -> dict[str, Any]:
    """Shape of an accuracy-by-level curve.

    Returns ``pattern`` (flat / increasing / decreasing / rises then falls / falls then rises /
    non-monotonic), ``non_monotonic`` (the direction changes at least once), ``direction_changes``, and
    ``peak_level`` / ``dip_level`` when the maximum / minimum lies strictly inside the level range.
    """
    if len(levels) != len(accuracies):
        raise ValueError("levels and accuracies differ in length")
    signs = []
    for a, b in zip(accuracies, accuracies[1:], strict=False):
        if b - a > _EPS:
            signs.append(1)
        elif a - b > _EPS:
            signs.append(-1)
    changes = sum(1 for s, t in zip(signs, signs[1:], strict=False) if s != t)
    peak_level = dip_level = None
    if len(levels) >= 3:
        i_max = max(range(len(levels)), key=lambda i: (accuracies[i], -i))
        i_min = min(range(len(levels)), key=lambda i: (accuracies[i], i))
        if 0 < i_max < len(levels) - 1:
            peak_level = levels[i_max]
        if 0 < i_min < len(levels) - 1:
            dip_level = levels[i_min]
    if not signs:
        pattern = "flat"
    elif changes == 0:
        pattern = "increasing" if signs[0] > 0 else "decreasing"
    elif changes == 1 and signs[0] > 0:
        pattern = f"rises then falls (peak at L{peak_level})"
    elif changes == 1:
        pattern = f"falls then rises (dip at L{dip_level})"
    else:
        pattern = f"non-monotonic ({changes} changes of direction)"
    return {
        "pattern": pattern,
        "non_monotonic": changes >= 1,
        "direction_changes": changes,
        "peak_level": peak_level,
        "dip_level": dip_level,
    }


def _cmp_json(cmp: Comparison) -> dict[str, Any]:
    return {
        "against": cmp.b.label(),
        "diff": cmp.diff,
        "mcnemar_p": cmp.p_value,
        "significant": cmp.significant,
        "n_pairs": cmp.n_pairs,
        "bootstrap": cmp.bootstrap.to_json() if cmp.bootstrap else None,
        "reason": cmp.reason,
    }


def _sig_words(cmp: Comparison) -> str:
    if cmp.p_value is None:
        return f"untested: {cmp.reason}"
    p = fmt_p(cmp.p_value)
    p = p if p.startswith("<") else f"={p}"
    return f"p{p}, " + ("significant" if cmp.significant else "not significant")


def _diff_words(cmp: Comparison) -> str:
    return "n/a" if cmp.diff is None else f"{100.0 * cmp.diff:+.1f} pp"


def analyse_levels(curve: list[Condition], comparer: Comparer) -> dict[str, Any]:
    """Best level of one (dataset, student, teacher, format) curve and its tests against neighbours."""
    curve = sorted(curve, key=lambda c: c.key.level)  # type: ignore[arg-type, return-value]
    levels = [c.key.level for c in curve]
    accs = [c.accuracy for c in curve]
    bi = max(range(len(curve)), key=lambda i: (accs[i], -i))
    best = curve[bi]
    neighbours = [curve[i] for i in (bi - 1, bi + 1) if 0 <= i < len(curve)]
    tests = [comparer.compare(best, nb) for nb in neighbours]
    significant = bool(tests) and all(t.significant and (t.diff or 0) > 0 for t in tests)
    shape = level_pattern(levels, accs)  # type: ignore[arg-type]
    pattern_significant = None
    if shape["non_monotonic"]:
        pattern_significant = _extremum_significant(curve, shape, comparer)
    k = best.key
    head = f"teacher {k.teacher}, format {k.format}: best level L{k.level} ({pct(best.accuracy)}%)"
    if len(curve) == 1:
        text = head + "; only one level was run."
    else:
        parts = [f"vs L{t.b.level} {_diff_words(t)} ({_sig_words(t)})" for t in tests]
        text = head + "; " + "; ".join(parts) + "."
        verdict = (
            "significantly better than its neighbouring levels"
            if significant
            else "not significantly better than all its neighbouring levels"
        )
        text += f" The best level is {verdict}."
        if shape["non_monotonic"]:
            text += f" Pattern: {shape['pattern']}"
            text += (
                " — significant."
                if pattern_significant
                else " — not significant: may be seed noise, not a finding."
            )
        else:
            text += f" Pattern: {shape['pattern']}."
    seeds = max(len(c.cells) for c in curve)
    if seeds == 1 and len(curve) > 1:
        text += " One seed only."
    return {
        "teacher": k.teacher,
        "format": k.format,
        "levels": levels,
        "accuracies": accs,
        "seeds": seeds,
        "best_level": k.level,
        "best_accuracy": best.accuracy,
        "neighbour_tests": [_cmp_json(t) for t in tests],
        "significant_vs_neighbours": significant,
        **shape,
        "pattern_significant": pattern_significant,
        "text": text,
    }


def _extremum_significant(curve: list[Condition], shape: dict[str, Any], comparer: Comparer) -> bool:
    """Whether an interior peak (dip) is significantly above (below) both neighbours."""
    levels = [c.key.level for c in curve]
    for name, sign in (("peak_level", 1), ("dip_level", -1)):
        lv = shape[name]
        if lv is None:
            continue
        i = levels.index(lv)
        tests = [comparer.compare(curve[i], curve[j]) for j in (i - 1, i + 1)]
        if all(t.significant and (t.diff or 0) * sign > 0 for t in tests):
            return True
    return False


def _best_of(conds: list[Condition]) -> Condition:
    return max(enumerate(conds), key=lambda ic: (ic[1].accuracy, -ic[0]))[1]


def _pick_with_runner_up(
    groups: list[list[Condition]], comparer: Comparer, attr: str
) -> dict[str, Any] | None:
    """The best condition among groups of two or more alternatives, tested against its group's runner-up."""
    best_group, best = None, None
    for group in groups:
        if len(group) < 2:
            continue
        cand = _best_of(group)
        if best is None or cand.accuracy > best.accuracy:
            best_group, best = group, cand
    if best is None or best_group is None:
        return None
    runner = _best_of([c for c in best_group if c is not best])
    cmp = comparer.compare(best, runner)
    value = getattr(best.key, attr)
    text = (
        f"best {attr} {value} ({pct(best.accuracy)}%) vs {getattr(runner.key, attr)} "
        f"{_diff_words(cmp)} ({_sig_words(cmp)})."
    )
    return {
        attr: value,
        "condition": best.key.to_json(),
        "accuracy": best.accuracy,
        "runner_up": runner.key.to_json(),
        "test": _cmp_json(cmp),
        "significant": cmp.significant,
        "text": text,
    }


def recommendations(conds: dict[CondKey, Condition], comparer: Comparer) -> list[dict[str, Any]]:
    """One recommendation per (dataset, student) with CoT cells."""
    per: dict[tuple[str, str], list[Condition]] = defaultdict(list)
    for key, cond in conds.items():
        if key.role == COT:
            per[(key.dataset, key.student)].append(cond)
    answer_only = {(k.dataset, k.student): c for k, c in conds.items() if k.role == ANSWER_ONLY}
    out = []
    for (dataset, student), group in sorted(per.items()):
        curves: dict[tuple[str, str], list[Condition]] = defaultdict(list)
        for c in group:
            if c.key.level is not None:
                curves[(c.key.teacher, c.key.format or COT)].append(c)
        analyses = [analyse_levels(curve, comparer) for _, curve in sorted(curves.items())]
        headline_pool = [a for a in analyses if a["format"] == COT] or analyses
        headline = max(headline_pool, key=lambda a: a["best_accuracy"]) if headline_pool else None

        fmt_groups: dict[tuple[str, int], list[Condition]] = defaultdict(list)
        for c in group:
            if c.key.level is not None:
                fmt_groups[(c.key.teacher, c.key.level)].append(c)
        best_format = _pick_with_runner_up(list(fmt_groups.values()), comparer, "format")

        cot_levelled = [c for c in group if c.key.level is not None and (c.key.format or COT) == COT]
        level = choose_teacher_level(cot_levelled)
        best_teacher = _pick_with_runner_up(
            [[c for c in cot_levelled if c.key.level == level]], comparer, "teacher"
        )

        best = _best_of(group)
        rec: dict[str, Any] = {
            "dataset": dataset,
            "student": student,
            "best": best.key.to_json() | {"accuracy": best.accuracy, "seeds": len(best.cells)},
            "level": headline,
            "level_curves": analyses,
            "format": best_format,
            "teacher": best_teacher,
            "vs_answer_only": None,
        }
        lines = [
            f"Best cell: {best.key.label()} ({pct(best.accuracy)}%, "
            f"{len(best.cells)} seed{'s' if len(best.cells) != 1 else ''})."
        ]
        base = answer_only.get((dataset, student))
        if base is not None:
            cmp = comparer.compare(best, base)
            rec["vs_answer_only"] = _cmp_json(cmp)
            lines.append(f"Against answer-only: {_diff_words(cmp)} ({_sig_words(cmp)}).")
        if headline is not None:
            lines.append("Level — " + headline["text"])
        if best_format is not None:
            lines.append("Format — " + best_format["text"])
        if best_teacher is not None:
            lines.append(f"Teacher (level {level}) — " + best_teacher["text"])
        rec["text"] = lines
        out.append(rec)
    return out
