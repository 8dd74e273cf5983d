"""PNG figures (matplotlib, Agg backend) drawn from the tables' records.

Only the figures whose data exist are written; the others are returned as skipped, with the reason.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from shared.report.tables import Table  # noqa: E402

LEVEL_PLOT = "accuracy_by_level.png"
TEACHER_PLOT = "teacher_comparison.png"
FORMAT_PLOT = "format_comparison.png"


def _grid(n: int) -> tuple[int, int]:
    cols = min(3, n)
    return math.ceil(n / cols), cols


def _err(rec: dict[str, Any]) -> tuple[float, float]:
    """Lower and upper error-bar lengths in percent."""
    return (100 * (rec["accuracy"] - rec["ci_low"]), 100 * (rec["ci_high"] - rec["accuracy"]))


def plot_levels(tables: list[Table], path: Path) -> bool:
    """Accuracy vs level: a line per student with its CI band, answer-only dashed.

    One panel per level table with two or more levels (format ``cot``, or the others when it has none).
    """
    curves = [t for t in tables if t.kind == "by_level" and len(t.meta["levels"]) >= 2]
    # the paper's figure is about plain CoT; other formats only when no plain-CoT curve exists
    tables = [t for t in curves if t.meta["format"] == "cot"] or curves
    if not tables:
        return False
    rows, cols = _grid(len(tables))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, table in zip(axes.flat, tables, strict=False):
        for i, rec in enumerate(table.records):
            color = colors[i % len(colors)]
            pts = sorted((int(lv), c) for lv, c in rec["levels"].items())
            if pts:
                xs = [lv for lv, _ in pts]
                ys = [100 * c["accuracy"] for _, c in pts]
                ax.plot(xs, ys, marker="o", color=color, label=rec["student"])
                ax.fill_between(
                    xs,
                    [100 * c["ci_low"] for _, c in pts],
                    [100 * c["ci_high"] for _, c in pts],
                    color=color,
                    alpha=0.15,
                    linewidth=0,
                )
            ao = rec.get("answer_only")
            if ao:
                ax.axhline(100 * ao["accuracy"], color=color, linestyle="--", linewidth=1)
        meta = table.meta
        ax.set_title(
            f"{meta['dataset']} — {meta['teacher']} ({meta['format']}); dashed: answer-only", fontsize=9
        )
        ax.set_xlabel("granularity level")
        ax.set_ylabel("accuracy (%)")
        ax.set_xticks(meta["levels"])
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(tables) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_bars(tables: list[Table], kind: str, field: str, meta_key: str, title: Any, path: Path) -> bool:
    tables = [t for t in tables if t.kind == kind]
    if not tables:
        return False
    rows, cols = _grid(len(tables))
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 4.0 * rows), squeeze=False)
    for ax, table in zip(axes.flat, tables, strict=False):
        series = table.meta[meta_key]
        students = [r["student"] for r in table.records]
        width = 0.8 / max(1, len(series))
        for j, name in enumerate(series):
            xs, ys, lo, hi = [], [], [], []
            for i, rec in enumerate(table.records):
                c = rec[field].get(name)
                if c is None:
                    continue
                xs.append(i + (j - (len(series) - 1) / 2) * width)
                ys.append(100 * c["accuracy"])
                e = _err(c)
                lo.append(e[0])
                hi.append(e[1])
            ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=3, label=name)
        ax.set_xticks(range(len(students)))
        ax.set_xticklabels(students, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title(table.meta), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tables) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_plots(tables: list[Table], out_dir: Path) -> tuple[list[str], dict[str, str]]:
    """Write every figure whose data exist; return (written file names, skipped name -> reason)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    skipped: dict[str, str] = {}
    jobs = [
        (LEVEL_PLOT, lambda p: plot_levels(tables, p), "no teacher/format run at two or more levels"),
        (
            TEACHER_PLOT,
            lambda p: _plot_bars(
                tables,
                "by_teacher",
                "teachers",
                "teachers",
                lambda m: f"{m['dataset']} — level {m['level']}",
                p,
            ),
            "fewer than two teachers at a common level",
        ),
        (
            FORMAT_PLOT,
            lambda p: _plot_bars(
                tables,
                "by_format",
                "formats",
                "formats",
                lambda m: f"{m['dataset']} — {m['teacher']}, level {m['level']}",
                p,
            ),
            "fewer than two formats at a common teacher and level",
        ),
    ]
    for name, draw, reason in jobs:
        path = out_dir / name
        if draw(path):
            written.append(name)
        else:
            skipped[name] = reason
            if path.exists():  # a stale figure from an earlier report would mislead
                path.unlink()
    return written, skipped
