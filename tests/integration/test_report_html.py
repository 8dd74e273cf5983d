"""report.html renders in headless Chromium: a non-blank page, the tables in the DOM, no console messages."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from shared.report.build import REPORT_HTML, report_from_dir
from tests.unit.test_report_build import _write_cell, first

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is absent (install it with: apt-get install -y chromium)",
    ),
]


@pytest.fixture(scope="module")
def html_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("html-run")
    cells = [
        _write_cell(
            root, "ao", first(4), teacher="answer-only", teacher_kind="answer-only", level=None, fmt=None
        )
    ]
    for lv, k in ((1, 8), (2, 16), (3, 10)):
        cells.append(_write_cell(root, f"s1-L{lv}", first(k), level=lv))
        cells.append(_write_cell(root, f"s2-L{lv}", first(k - 2), level=lv, student="s2"))
    cells.append(_write_cell(root, "t2", first(12), teacher="t2", teacher_kind="openai", level=2))
    cells.append(_write_cell(root, "failed", None, level=4, status="failed", error="boom"))
    (root / "results.json").write_text(json.dumps({"grid": {"name": "html"}, "cells": cells}))
    report_from_dir(root)
    return root / REPORT_HTML


def _chromium(args: list[str], user_data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={user_data}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_screenshot_is_not_blank(html_report: Path, tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "shot.png"
    proc = _chromium(
        [f"--screenshot={png}", "--window-size=1200,2000", html_report.as_uri()], tmp_path / "ud"
    )
    assert png.is_file(), f"no screenshot (rc={proc.returncode}): {proc.stderr[-2000:]}"
    with Image.open(png) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1200, 2000)
        pixels = np.asarray(rgb.resize((300, 500))).reshape(-1, 3)
    colours = len(np.unique(pixels, axis=0))
    non_white = int((pixels.min(axis=1) < 240).sum())
    assert colours > 10, f"only {colours} distinct colours"
    assert non_white > 0.02 * len(pixels), f"only {non_white} of {len(pixels)} pixels are not white"


def test_dom_has_tables_and_no_console_messages(html_report: Path, tmp_path: Path) -> None:
    proc = _chromium(
        ["--enable-logging=stderr", "--v=0", "--dump-dom", html_report.as_uri()], tmp_path / "ud"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    for table_id in ("level-toy-t1-cot", "teacher-toy-l2", "gain-toy", "missing-cells"):
        assert f'data-table="{table_id}"' in dom, table_id
    assert "<h1>cotd report — html</h1>" in dom
    assert len(re.findall(r'<img alt="[^"]+\.png" src="data:image/png;base64,', dom)) == 2
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, "\n".join(console)
