"""deploy/prometheus/alerts.yml: valid for promtool, each alert fires on synthetic series, wired in the stack."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from shared import metrics
from tests.conftest import REPO_ROOT

PROM_DIR = REPO_ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERT_NAMES = {
    "CotdStageStalled",
    "CotdStageFailureRate",
    "CotdStageRetrying",
    "CotdTeacherOutage",
    "CotdStorageDown",
    "CotdWorkerDown",
}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus; .ci/run does)")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, cwd=PROM_DIR)


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(ALERT_NAMES)} rules found" in result.stdout


def test_every_alert_fires_on_its_synthetic_series() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROM_DIR / "alerts_test.yml").read_text()))
    assert tested == ALERT_NAMES == {r["alert"] for r in _rules()}


def test_alerts_use_only_metrics_that_exist() -> None:
    known = metrics.series_names() | {"up"}
    for rule in _rules():
        names = set(re.findall(r"\b(?:cotd_[a-z0-9_]+|up)\b", rule["expr"]))
        assert names and names <= known, (rule["alert"], names - known)


def test_the_stack_loads_the_rules() -> None:
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    assert "minio" in {j["job_name"] for j in cfg["scrape_configs"]}  # CotdStorageDown's `up`
    prom = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]["prometheus"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in prom["volumes"]
