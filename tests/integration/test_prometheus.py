"""Real Prometheus scrapes real `cotd worker`s running a tiny grid; every dashboard query has data.

It also loads deploy/prometheus/alerts.yml (every rule must evaluate without error on the real
series) and checks that each worker exports only its own role's stage metrics.

Every PromQL expression of deploy/grafana/dashboards/cotd.json (Grafana variables substituted:
`$__rate_interval` by a window covering many 1 s scrapes, template variables by their "All" value)
must return at least one series, and every template variable's label_values() at least one value.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.integration.services import (
    REPO,
    S3_KEY,
    S3_SECRET,
    Worker,
    cotd_env,
    free_port,
    moto_server,
    redis_db,
    scratch_dir,
    stop,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "cotd.json"
REDIS_DB = 12
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h", "__range_s": "3600"}


def dashboard_exprs(doc: object) -> list[str]:
    """Every `expr` string in a Grafana dashboard, in order, without repeats."""
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "expr" and isinstance(v, str) and v.strip() and v not in out:
                    out.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    return out


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace `$name`, `${name}` and `[[name]]` by their values (Grafana's forms)."""

    def value(m: re.Match) -> str:
        name = next(g for g in m.groups() if g)
        if name not in variables:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", value, expr)


def template_values(doc: dict) -> dict[str, str]:
    """Each template variable's "All" value (its allValue, or `.*`), plus Grafana's built-ins."""
    out = dict(GRAFANA_BUILTINS)
    for var in (doc.get("templating") or {}).get("list", []):
        out[var["name"]] = var.get("allValue") or ".*"
    return out


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback Prometheus
        return json.loads(resp.read())


def test_substitute():
    v = {"grid": ".*", "__rate_interval": "1m"}
    assert substitute('rate(x{grid=~"$grid"}[$__rate_interval])', v) == 'rate(x{grid=~".*"}[1m])'
    assert substitute("${grid} [[grid]]", v) == ".* .*"


def test_every_dashboard_query_has_data():
    prom_bin = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if prom_bin is None:
        pytest.skip("Prometheus is not installed (Debian: apt-get install -y prometheus)")
    doc = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(doc)
    assert exprs, "the dashboard has no queries"
    variables = template_values(doc)
    url = redis_db(REDIS_DB)

    with scratch_dir("cotd-prom-") as root, moto_server(root) as endpoint:
        env = cotd_env(url, endpoint, "cotd-prom", root / "cache")
        workers = [Worker("generator", env, root, 2), Worker("trainer", env, root), Worker("evaluator", env, root)]
        prom = None
        try:
            for w in workers:
                w.start()
            prom_port = free_port()
            config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(REPO / "deploy" / "prometheus" / "alerts.yml")],
                "scrape_configs": [
                    {"job_name": f"cotd-{w.role}", "static_configs": [{"targets": [f"127.0.0.1:{w.port}"]}]} for w in workers
                ],
            }
            (root / "prometheus.yml").write_text(yaml.safe_dump(config))
            log = open(root / "prometheus.log", "wb")  # noqa: SIM115 - closed below
            prom = subprocess.Popen(
                [
                    prom_bin,
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={root / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            api = f"http://127.0.0.1:{prom_port}/api/v1"

            def targets_up() -> bool:
                active = _get(f"{api}/targets")["data"]["activeTargets"]
                return len(active) == len(workers) and all(t["health"] == "up" for t in active)

            wait_for(targets_up, 60, "Prometheus to scrape every worker", interval=0.5)

            from shared.grid import parse_grid
            from shared.orchestration.context import Context
            from shared.orchestration.state import GridState
            from shared.orchestration.submit import submit_grid
            from shared.settings import Settings

            grid = parse_grid(
                {
                    "name": "prom",
                    "datasets": [{"name": "arith", "train_size": 32, "test_size": 10}],
                    "teachers": [{"name": "proc", "kind": "procedural"}],
                    "levels": [1],
                    "students": [{"name": "xs", "model": "tiny:xs"}],
                    "training": {"max_steps": 10, "micro_batch_size": 8, "global_batch_size": 8, "lr": 0.006, "from_scratch": True},
                    "evaluation": {"test_size": 10, "max_new_tokens": 30, "batch_size": 10},
                    "seeds": [11],
                }
            )
            settings = Settings(
                redis_url=url,
                store="s3",
                s3_endpoint=endpoint,
                s3_access_key=S3_KEY,
                s3_secret_key=S3_SECRET,
                s3_bucket="cotd-prom",
                cache_dir=str(root / "client-cache"),
            )
            ctx = Context(settings)
            gs = GridState(ctx.redis, submit_grid(grid, ctx).grid_id)
            wait_for(lambda: gs.status() in ("done", "failed"), 180, "the grid to finish", interval=0.5)
            assert gs.status() == "done", gs.hash("reasons")

            empty: dict[str, str] = {}

            def has_data(q: str) -> bool:
                res = _get(f"{api}/query?" + urllib.parse.urlencode({"query": q}))
                if res["status"] != "success" or not res["data"]["result"]:
                    empty[q] = json.dumps(res)[:300]
                    return False
                empty.pop(q, None)
                return True

            pending = [substitute(e, variables) for e in exprs]

            def all_have_data() -> bool:  # a rate() needs a couple of scrapes after its series appeared
                pending[:] = [q for q in pending if not has_data(q)]
                return not pending

            try:
                wait_for(all_have_data, 60, "every dashboard query to return data", interval=1.0)
            except AssertionError:
                pass
            assert not pending, "queries without data:\n" + "\n".join(f"{q}\n    {empty.get(q)}" for q in pending)

            rules = [r for g in _get(f"{api}/rules")["data"]["groups"] for r in g["rules"]]
            assert len(rules) >= 6 and all(r["health"] == "ok" for r in rules), [  # they evaluate on real series
                (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"
            ]

            for w in workers:  # each role exports its own stage's series and no other role's
                stages = {line.split("_")[1] for line in w.metrics().splitlines() if line.startswith("cotd_")}
                assert w.role in stages and not stages & ({"generator", "trainer", "evaluator"} - {w.role}), (w.role, stages)

            for var in (doc.get("templating") or {}).get("list", []):
                m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var.get("definition", ""))
                if m:
                    values = _get(f"{api}/label/{m.group(2)}/values?" + urllib.parse.urlencode({"match[]": m.group(1)}))["data"]
                    assert values, f"template variable {var['name']}: no values"
        finally:
            if prom is not None:
                stop(prom)
            for w in workers:
                w.stop()
