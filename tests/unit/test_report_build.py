"""`cotd report` on a synthetic run folder whose per-item outcomes are known, number by number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from shared.orchestration.report_cli import report as report_cmd
from shared.report.build import REPORT_HTML, REPORT_JSON, REPORT_MD, report_from_dir
from shared.report.stats import wilson_interval

N = 20
IDS = [f"q{i}" for i in range(N)]


def first(k: int) -> set[str]:
    """Items q0 .. q{k-1} correct."""
    return set(IDS[:k])


def _write_cell(
    root: Path,
    name: str,
    correct: set[str] | None,
    *,
    dataset: str = "toy",
    teacher: str = "t1",
    teacher_kind: str = "procedural",
    level: int | None = 1,
    fmt: str | None = "cot",
    student: str = "s1",
    seed: int = 1,
    cot_key: str | None = None,
    cot_stats: dict[str, Any] | None = None,
    write_predictions: bool = True,
    accuracy: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A done cell plus its predictions.jsonl; the accuracy and CI follow from ``correct``."""
    eval_key = f"e-{name}"
    cell: dict[str, Any] = {
        "dataset": dataset,
        "teacher": teacher,
        "teacher_kind": teacher_kind,
        "level": level,
        "format": fmt,
        "student": student,
        "seed": seed,
        "n": N,
        "extraction_failure_rate": 0.0,
        "mean_output_tokens": 10.0,
        "cot_key": cot_key or f"c-{dataset}-{teacher}-{level}-{fmt}",
        "checkpoint_key": f"k-{name}",
        "eval_key": eval_key,
        "status": "done",
    }
    if correct is not None:
        k = len(correct)
        cell["accuracy"] = k / N
        cell["ci_low"], cell["ci_high"] = wilson_interval(k, N)
    else:
        cell["accuracy"] = accuracy
    if cot_stats is not None:
        cell["cot_stats"] = cot_stats
    cell.update(extra)
    if correct is not None and write_predictions:
        d = root / "artifacts" / "evals" / eval_key
        d.mkdir(parents=True, exist_ok=True)
        with (d / "predictions.jsonl").open("w") as fh:
            for i in IDS:
                fh.write(
                    json.dumps(
                        {
                            "id": i,
                            "correct": i in correct,
                            "prompt": "p",
                            "output": "o",
                            "extracted": "1",
                            "gold": "1",
                            "rule": "number",
                        }
                    )
                    + "\n"
                )
    return cell


def _manifest(root: Path, cot_key: str, stats: dict[str, Any]) -> None:
    d = root / "artifacts" / "cotsets" / cot_key
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(json.dumps({"key": cot_key, "stats": stats}))


# CoT set statistics of t1's levels: L1/L2 in the cells, L3/L4 only in the manifests.
SET_STATS = {
    1: {
        "teacher_accuracy": 0.90,
        "mean_tokens": 10.0,
        "mean_words": 8.0,
        "mean_steps": 1.0,
        "distinct_2": 0.5,
        "items": 100,
    },
    2: {
        "teacher_accuracy": 0.95,
        "mean_tokens": 20.0,
        "mean_words": 15.0,
        "mean_steps": 2.0,
        "distinct_2": 0.6,
        "items": 100,
    },
    3: {
        "teacher_accuracy": 0.99,
        "mean_tokens": 30.0,
        "mean_words": 22.0,
        "mean_steps": 3.0,
        "distinct_2": 0.7,
        "items": 100,
    },
    4: {
        "teacher_accuracy": 0.97,
        "mean_tokens": 40.0,
        "mean_words": 30.0,
        "mean_steps": 4.0,
        "distinct_2": 0.8,
        "items": 100,
    },
}
S1_LEVELS = {1: first(8), 2: first(16), 3: first(10), 4: first(9)}  # peak at L2
S2_LEVELS = {1: first(10), 2: first(12), 3: set(IDS[2:13])}  # 10, 12, 11 of 20: flat-ish peak at L2


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    cells = [
        _write_cell(
            root, "ao-s1", first(4), teacher="answer-only", teacher_kind="answer-only", level=None, fmt=None
        ),
        _write_cell(
            root,
            "human-s1",
            first(6),
            teacher="human",
            teacher_kind="human",
            level=None,
            fmt=None,
            cot_stats={"teacher_accuracy": 1.0, "mean_words": 40.0},
        ),
    ]
    for lv, correct in S1_LEVELS.items():
        stats = SET_STATS[lv] if lv <= 2 else None
        cells.append(_write_cell(root, f"s1-L{lv}", correct, level=lv, cot_stats=stats))
    for lv, correct in S2_LEVELS.items():
        cells.append(_write_cell(root, f"s2-L{lv}", correct, level=lv, student="s2"))
    for lv in (3, 4):
        _manifest(root, f"c-toy-t1-{lv}-cot", SET_STATS[lv])
    cells += [
        _write_cell(root, "s1-t2-L2", first(12), teacher="t2", teacher_kind="openai", level=2),
        _write_cell(root, "s1-L2-subq", first(14), level=2, fmt="subquestion"),
        # a done cell whose predictions were never written: shown, but untestable
        _write_cell(root, "s1-L2-rar", first(6), level=2, fmt="rar", write_predictions=False),
        # missing / partial cells
        _write_cell(root, "s1-L5", None, level=5, status="failed", error="CUDA out of memory"),
        _write_cell(root, "s1-L6", None, level=6, accuracy=None),
        "not a cell",
        # several seeds: dataset toy2, student s1, levels 1 and 2 with seeds 1 and 2; answer-only has seed 1 only
        _write_cell(root, "toy2-L1-a", first(6), dataset="toy2", level=1, seed=1),
        _write_cell(root, "toy2-L1-b", first(10), dataset="toy2", level=1, seed=2),
        _write_cell(root, "toy2-L2-a", first(12), dataset="toy2", level=2, seed=1),
        _write_cell(root, "toy2-L2-b", first(14), dataset="toy2", level=2, seed=2),
        _write_cell(
            root,
            "toy2-ao",
            first(2),
            dataset="toy2",
            teacher="answer-only",
            teacher_kind="answer-only",
            level=None,
            fmt=None,
            seed=1,
        ),
    ]
    (root / "results.json").write_text(json.dumps({"grid": {"name": "synthetic"}, "cells": cells}))
    return root


@pytest.fixture(scope="module")
def report(run_dir: Path) -> dict[str, Any]:
    return report_from_dir(run_dir)


def _cond(report: dict[str, Any], **match: Any) -> dict[str, Any]:
    found = [c for c in report["conditions"] if all(c.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def _table(report: dict[str, Any], table_id: str) -> dict[str, Any]:
    return next(t for t in report["tables"] if t["id"] == table_id)


def _test(report: dict[str, Any], a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    def same(x: dict[str, Any], y: dict[str, Any]) -> bool:
        return all(x.get(k) == v for k, v in y.items())

    found = [t for t in report["tests"] if same(t["a"], a) and same(t["b"], b)]
    assert found, (a, b)
    return found[0]


def test_all_files_written(run_dir: Path, report: dict[str, Any]) -> None:
    for name in (
        REPORT_MD,
        REPORT_JSON,
        REPORT_HTML,
        "accuracy_by_level.png",
        "teacher_comparison.png",
        "format_comparison.png",
    ):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    assert report["plots"]["skipped"] == {}
    on_disk = json.loads((run_dir / REPORT_JSON).read_text())
    assert on_disk["summary"] == report["summary"]


def test_accuracies_and_intervals(report: dict[str, Any]) -> None:
    for lv, correct in S1_LEVELS.items():
        c = _cond(report, dataset="toy", student="s1", teacher="t1", level=lv, format="cot")
        k = len(correct)
        assert c["accuracy"] == pytest.approx(k / N)
        lo, hi = wilson_interval(k, N)
        assert (c["ci_low"], c["ci_high"]) == pytest.approx((lo, hi))
        assert c["half_ci"] == pytest.approx((hi - lo) / 2)
        assert c["n"] == N
    ao = _cond(report, dataset="toy", student="s1", role="answer-only")
    assert ao["accuracy"] == pytest.approx(0.2)
    assert ao["level"] is None and ao["format"] is None


def test_several_seeds_mean_pooled_interval_and_pairs(report: dict[str, Any]) -> None:
    l1 = _cond(report, dataset="toy2", level=1)
    assert l1["seeds"] == [1, 2]
    assert l1["accuracy"] == pytest.approx((0.3 + 0.5) / 2)
    assert l1["seed_sd"] == pytest.approx(float(np.std([0.3, 0.5], ddof=1)))
    assert l1["n"] == 2 * N
    assert (l1["ci_low"], l1["ci_high"]) == pytest.approx(wilson_interval(16, 40))
    l2 = _cond(report, dataset="toy2", level=2)
    t = _test(report, {"dataset": "toy2", "level": 2}, {"dataset": "toy2", "level": 1})
    # seed 1: L2 right, L1 wrong on q6..q11 (6); seed 2: q10..q13 (4); never the reverse
    assert t["n_pairs"] == 40
    assert (t["a_right_b_wrong"], t["a_wrong_b_right"]) == (10, 0)
    assert t["mcnemar_p"] == pytest.approx(2 / 2**10)
    assert t["diff"] == pytest.approx(l2["accuracy"] - l1["accuracy"])
    # gain over answer-only uses seed 1 only, the one seed both ran
    gain = _table(report, "gain-toy2")
    rec = next(r for r in gain["records"] if r["level"] == 2)
    assert rec["vs_answer-only"]["common_seeds"] == ["1"]
    assert rec["vs_answer-only"]["gain"] == pytest.approx(0.6 - 0.1)
    assert rec["vs_answer-only"]["n_pairs"] == N
    assert rec["vs_answer-only"]["mcnemar_p"] == pytest.approx(2 / 2**10)


def test_level_table_cells_and_marks(report: dict[str, Any]) -> None:
    level_ids = {t["id"] for t in report["tables"] if t["kind"] == "by_level"}
    # cot always gets a table; rar and subquestion ran at one level only, so they live in the format table
    assert level_ids == {"level-toy-t1-cot", "level-toy-t2-cot", "level-toy2-t1-cot"}
    t = _table(report, "level-toy-t1-cot")
    assert t["columns"] == ["student", "answer-only", "human", "L1", "L2", "L3", "L4"]
    s1 = t["rows"][0]
    lo, hi = wilson_interval(16, N)
    assert s1[0] == "s1"
    assert s1[4] == f"80.0 ± {100 * (hi - lo) / 2:.1f} (20)"
    assert t["bold"][0][4] is True
    # vs best L2: AO b=12,c=0; human b=10; L1 b=8; L3 b=6; L4 b=7 -> all p < 0.05 -> all marked
    for col in (1, 2, 3, 5, 6):
        assert s1[col].endswith("*"), s1[col]
    s2 = t["rows"][1]
    assert s2[1] == "—" and s2[2] == "—"  # no baselines for s2
    assert t["bold"][1][4] is True and not s2[3].endswith("*") and not s2[5].endswith("*")
    assert s2[6] == "—"  # s2 never ran L4


def test_mcnemar_values_in_tests(report: dict[str, Any]) -> None:
    best = {"dataset": "toy", "student": "s1", "teacher": "t1", "level": 2, "format": "cot"}
    expect = {1: (8, 0, 2 / 2**8), 3: (6, 0, 2 / 2**6), 4: (7, 0, 2 / 2**7)}
    for lv, (b, c, p) in expect.items():
        t = _test(
            report, best, {"dataset": "toy", "student": "s1", "teacher": "t1", "level": lv, "format": "cot"}
        )
        assert (t["a_right_b_wrong"], t["a_wrong_b_right"]) == (b, c)
        assert t["mcnemar_p"] == pytest.approx(p)
        assert t["significant"] is True
        assert t["bootstrap"]["diff"] == pytest.approx(b / N - c / N)
    s2 = {"dataset": "toy", "student": "s2", "teacher": "t1", "format": "cot"}
    t = _test(report, {**s2, "level": 2}, {**s2, "level": 1})
    assert (t["a_right_b_wrong"], t["a_wrong_b_right"], t["mcnemar_p"]) == (2, 0, pytest.approx(0.5))
    t = _test(report, {**s2, "level": 2}, {**s2, "level": 3})
    assert (t["a_right_b_wrong"], t["a_wrong_b_right"], t["mcnemar_p"]) == (2, 1, pytest.approx(1.0))
    assert t["significant"] is False


def test_recommendations_best_level_and_pattern(report: dict[str, Any]) -> None:
    recs = {(r["dataset"], r["student"]): r for r in report["recommendations"]}
    s1 = recs[("toy", "s1")]["level"]
    assert s1["best_level"] == 2 and s1["best_accuracy"] == pytest.approx(0.8)
    assert s1["significant_vs_neighbours"] is True
    assert s1["non_monotonic"] is True and s1["peak_level"] == 2
    assert s1["pattern"] == "rises then falls (peak at L2)" and s1["pattern_significant"] is True
    assert [t["mcnemar_p"] for t in s1["neighbour_tests"]] == pytest.approx([2 / 2**8, 2 / 2**6])

    s2 = recs[("toy", "s2")]["level"]
    assert s2["best_level"] == 2 and s2["best_accuracy"] == pytest.approx(0.6)
    assert s2["significant_vs_neighbours"] is False
    assert s2["non_monotonic"] is True and s2["pattern_significant"] is False
    assert "not significant" in s2["text"]

    fmt = recs[("toy", "s1")]["format"]
    assert fmt["format"] == "cot" and fmt["runner_up"]["format"] == "subquestion"
    assert fmt["test"]["mcnemar_p"] == pytest.approx(0.5) and fmt["significant"] is False
    teacher = recs[("toy", "s1")]["teacher"]
    assert teacher["teacher"] == "t1" and teacher["runner_up"]["teacher"] == "t2"
    assert teacher["test"]["mcnemar_p"] == pytest.approx(2 / 2**4)
    ao = recs[("toy", "s1")]["vs_answer_only"]
    assert ao["diff"] == pytest.approx(0.6) and ao["mcnemar_p"] == pytest.approx(2 / 2**12)
    assert recs[("toy", "s2")]["vs_answer_only"] is None
    assert "Against answer-only: +60.0 pp (p<0.001, significant)." in recs[("toy", "s1")]["text"]

    toy2 = recs[("toy2", "s1")]["level"]
    assert toy2["best_level"] == 2 and toy2["seeds"] == 2
    assert toy2["neighbour_tests"][0]["mcnemar_p"] == pytest.approx(2 / 2**10)


def test_teacher_and_format_tables(report: dict[str, Any]) -> None:
    t = _table(report, "teacher-toy-l2")
    assert t["meta"]["level"] == 2 and t["columns"] == ["student", "t1", "t2"]
    assert t["rows"][0][2].startswith("60.0 ± ") and not t["rows"][0][2].endswith("*")  # p = 0.125
    f = _table(report, "format-toy-t1-l2")
    assert f["columns"] == ["student", "cot", "rar", "subquestion"]
    row = f["rows"][0]
    assert row[2].startswith("30.0 ± ") and not row[2].endswith("*")  # no predictions: untested
    rar = next(x for x in f["records"][0]["tests_vs_best"] if x["against"] == "t1 L2 rar")
    assert rar["mcnemar_p"] is None and rar["reason"] == "per-item predictions unavailable"


def test_gain_table(report: dict[str, Any]) -> None:
    g = _table(report, "gain-toy")
    rec = next(r for r in g["records"] if r["student"] == "s1" and r["level"] == 1 and r["format"] == "cot")
    assert rec["vs_answer-only"]["gain"] == pytest.approx(0.2)
    assert rec["vs_answer-only"]["mcnemar_p"] == pytest.approx(2 / 2**4)  # b=4, c=0
    assert rec["vs_human"]["gain"] == pytest.approx(0.1)
    assert rec["vs_human"]["mcnemar_p"] == pytest.approx(0.5)  # b=2, c=0
    row = g["rows"][g["records"].index(rec)]
    assert row[5] == "+20.0" and row[7] == "+10.0"  # p = 0.125 and 0.5: no mark
    rec2 = next(r for r in g["records"] if r["student"] == "s1" and r["level"] == 2 and r["format"] == "cot")
    row2 = g["rows"][g["records"].index(rec2)]
    assert row2[5] == "+60.0*" and row2[7] == "+50.0*"
    s2 = next(r for r in g["records"] if r["student"] == "s2")
    assert s2["vs_answer-only"] is None


def test_cot_stats_and_correlation(report: dict[str, Any]) -> None:
    sets = {(s["teacher"], s["level"], s["format"]): s for s in report["cot_sets"] if s["dataset"] == "toy"}
    for lv in (1, 2, 3, 4):  # 1-2 from the cells, 3-4 from the manifests
        assert sets[("t1", lv, "cot")]["teacher_accuracy"] == SET_STATS[lv]["teacher_accuracy"]
        assert sets[("t1", lv, "cot")]["mean_steps"] == SET_STATS[lv]["mean_steps"]
    assert sets[("human", None, None)]["mean_words"] == 40.0
    assert sets[("t2", 2, "cot")]["teacher_accuracy"] is None
    corr = next(c for c in report["correlations"] if c["dataset"] == "toy" and c["scope"] == "s1")
    # points for s1: t1 L1-4 (teacher accuracy from stats) and the human set (1.0)
    xs = [0.90, 0.95, 0.99, 0.97, 1.0]
    ys = [0.4, 0.8, 0.5, 0.45, 0.3]
    assert corr["teacher_accuracy"]["n"] == 5
    assert corr["teacher_accuracy"]["pearson"] == pytest.approx(float(np.corrcoef(xs, ys)[0, 1]))
    assert corr["mean_steps"]["n"] == 4


def test_missing_cells_listed_not_crashing(run_dir: Path, report: dict[str, Any]) -> None:
    assert report["summary"]["missing"] == 3
    reasons = sorted(m["reason"] for m in report["missing_cells"])
    assert reasons == ["cell is not an object", "no accuracy", "status failed"]
    failed = next(m for m in report["missing_cells"] if m["reason"] == "status failed")
    assert failed["level"] == 5 and failed["error"] == "CUDA out of memory"
    md = (run_dir / REPORT_MD).read_text()
    assert "## Missing cells" in md and "status failed" in md
    assert "L5" not in _table(report, "level-toy-t1-cot")["columns"]


def test_markdown_and_html_carry_the_tables(run_dir: Path) -> None:
    md = (run_dir / REPORT_MD).read_text()
    assert "| student | answer-only | human | L1 | L2 | L3 | L4 |" in md
    assert "**80.0 ± " in md and "McNemar" in md
    html = (run_dir / REPORT_HTML).read_text()
    assert 'data-table="level-toy-t1-cot"' in html
    assert html.count("data:image/png;base64,") == 3
    assert "<script" not in html and "http://" not in html and "https://" not in html


def test_only_baselines_skips_plots(tmp_path: Path) -> None:
    cells = [
        _write_cell(
            tmp_path, "ao", first(5), teacher="answer-only", teacher_kind="answer-only", level=None, fmt=None
        )
    ]
    (tmp_path / "results.json").write_text(json.dumps({"grid": {"name": "bare"}, "cells": cells}))
    out = tmp_path / "out"
    rep = report_from_dir(tmp_path / "results.json", out)
    assert rep["plots"]["written"] == []
    assert set(rep["plots"]["skipped"]) == {
        "accuracy_by_level.png",
        "teacher_comparison.png",
        "format_comparison.png",
    }
    assert rep["recommendations"] == []
    for name in (REPORT_MD, REPORT_JSON, REPORT_HTML):
        assert (out / name).is_file()


def test_empty_grid_reports(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"grid": {"name": "empty"}, "cells": []}))
    rep = report_from_dir(tmp_path)
    assert rep["summary"]["cells"] == 0 and (tmp_path / REPORT_HTML).is_file()


def test_cli_ok_and_bad_inputs(run_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(report_cmd, [str(run_dir), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and (tmp_path / "o" / REPORT_JSON).is_file()

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    res = runner.invoke(report_cmd, [str(bad)])
    assert res.exit_code != 0
    assert str(bad) in res.output and "not valid JSON" in res.output
    assert "Traceback" not in res.output

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"cells": "nope"}))
    res = runner.invoke(report_cmd, [str(wrong)])
    assert res.exit_code != 0 and str(wrong) in res.output

    res = runner.invoke(report_cmd, [str(tmp_path / "nowhere")])
    assert res.exit_code != 0 and "no such results file" in res.output


def test_store_loaders_read_through_a_store(run_dir: Path, tmp_path: Path) -> None:
    from shared.report.build import build_report, store_loaders

    class FolderStore:
        """The two methods of an artifact store that the report uses."""

        def __init__(self, root: Path) -> None:
            self.root = root

        def manifest(self, kind: str, key: str) -> dict | None:
            d = self.root / kind / key
            if kind == "evals":  # this synthetic run writes eval folders without manifests
                return {"key": key} if d.is_dir() else None
            p = d / "manifest.json"
            return json.loads(p.read_text()) if p.is_file() else None

        def fetch(self, kind: str, key: str) -> Path:
            return self.root / kind / key

    preds, stats = store_loaders(FolderStore(run_dir / "artifacts"))
    assert preds("missing-key") is None and stats("missing-key") is None
    assert stats("c-toy-t1-3-cot") == SET_STATS[3]
    results = json.loads((run_dir / "results.json").read_text())
    rep = build_report(results, preds, stats, tmp_path)
    direct = report_from_dir(run_dir, tmp_path / "direct")
    assert rep["tests"] == direct["tests"] and rep["recommendations"] == direct["recommendations"]


def test_odd_inputs_are_reported_not_fatal(tmp_path: Path) -> None:
    cells = [
        _write_cell(
            tmp_path, "ao", first(5), teacher="answer-only", teacher_kind="answer-only", level=None, fmt=None
        ),
        _write_cell(
            tmp_path, "L1", first(9), level=1, cot_stats={"teacher_accuracy": "nan", "mean_words": "x"}
        ),
        _write_cell(tmp_path, "L1-dup", first(3), level=1),  # same condition and seed as "L1"
        _write_cell(tmp_path, "L2", first(12), level="2"),
        _write_cell(tmp_path, "pct", None, level=3, accuracy=72.0),  # a percentage, not a fraction
        {"dataset": "toy", "accuracy": 0.5, "n": 20},  # no student
    ]
    (tmp_path / "artifacts" / "evals" / "e-L2" / "predictions.jsonl").write_text(
        '{"id": "q0", "correct": true}\n{oops\n'
    )
    (tmp_path / "results.json").write_text(json.dumps({"cells": cells}))
    rep = report_from_dir(tmp_path)
    reasons = sorted(m["reason"] for m in rep["missing_cells"])
    assert reasons == [
        "accuracy 72.0 outside [0, 1]",
        "duplicate of another cell with the same seed",
        "no student",
    ]
    assert rep["grid"] == "unnamed grid"
    assert any("e-L2" in w and ":2:" in w for w in rep["warnings"])
    t = _test(rep, {"level": 2}, {"level": 1})
    assert t["mcnemar_p"] is None and t["reason"] == "per-item predictions unavailable"
    l1 = _cond(rep, level=1)
    assert l1["accuracy"] == pytest.approx(0.45)  # the first cell of a seed wins
    sets = {s["level"]: s for s in rep["cot_sets"]}
    assert sets[1]["teacher_accuracy"] is None and sets[1]["mean_words"] is None
    json.loads((tmp_path / REPORT_JSON).read_text())


def test_strict_section_sets_the_paper_scoring_beside_ours(tmp_path: Path) -> None:
    cells = [
        _write_cell(tmp_path, f"{lv}-{seed}", first(k), level=lv, seed=seed, accuracy_strict=ks / N)
        for lv, seed, k, ks in ((1, 1, 6, 4), (1, 2, 8, 6), (3, 1, 12, 12), (3, 2, 10, 9))
    ]
    cells.append(
        _write_cell(tmp_path, "ao", first(5), teacher="answer-only", teacher_kind="answer-only", level=None,
                    fmt=None, accuracy_strict=5 / N)
    )  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps({"grid": {"name": "strict"}, "cells": cells}))
    rep = report_from_dir(tmp_path / "results.json", tmp_path / "out")
    table = _table(rep, "strict-toy")
    by = {r["label"]: r for r in table["records"]}
    assert by["t1 L1 cot"]["accuracy"] == pytest.approx(7 / N)
    assert by["t1 L1 cot"]["accuracy_strict"] == pytest.approx(5 / N)  # the mean over the two seeds
    assert by["t1 L3 cot"]["accuracy_strict"] == pytest.approx(10.5 / N)
    assert "accuracy_strict" in table["notes"][0] and "paper" in table["notes"][0]
    level = next(t for t in rep["tables"] if t["kind"] == "by_level")
    assert "`accuracy`, our flexible extraction" in level["notes"][0]  # each table says which it uses
    md = (tmp_path / "out" / REPORT_MD).read_text()
    assert "## Strict scoring" in md and "accuracy_strict (paper)" in md
    # without strict figures the section says so instead of showing a table
    for c in cells:
        c.pop("accuracy_strict")
    (tmp_path / "results.json").write_text(json.dumps({"grid": {"name": "strict"}, "cells": cells}))
    rep = report_from_dir(tmp_path / "results.json", tmp_path / "out2")
    assert not [t for t in rep["tables"] if t["kind"] == "strict"]
    assert "the results carry no strict accuracy" in (tmp_path / "out2" / REPORT_MD).read_text()
