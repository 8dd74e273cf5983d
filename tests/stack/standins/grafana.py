#!/opt/venv/bin/python
"""Grafana stand-in: exits 1 unless the provisioning files and dashboards parse and every dashboard's
datasource uid is provisioned; then answers GET /api/health on 0.0.0.0:3000 (what the healthcheck probes).
"""

import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import yaml

PROVISIONING = Path("/etc/grafana/provisioning")
DASHBOARDS = Path("/var/lib/grafana/dashboards")


def uids(node) -> set:
    """Every datasource uid a dashboard refers to."""
    if isinstance(node, dict):
        found = (
            {node["datasource"]["uid"]}
            if isinstance(node.get("datasource"), dict) and "uid" in node["datasource"]
            else set()
        )
        return found.union(*(uids(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(uids(v) for v in node))
    return set()


def check() -> None:
    sources = [yaml.safe_load(p.read_text()) for p in sorted(PROVISIONING.glob("datasources/*.y*ml"))]
    providers = [yaml.safe_load(p.read_text()) for p in sorted(PROVISIONING.glob("dashboards/*.y*ml"))]
    known = {d["uid"] for doc in sources for d in doc.get("datasources", [])}
    if not known or not providers:
        sys.exit(f"grafana stand-in: no datasources or dashboard providers under {PROVISIONING}")
    boards = sorted(DASHBOARDS.glob("*.json"))
    if not boards:
        sys.exit(f"grafana stand-in: no dashboards in {DASHBOARDS}")
    for path in boards:
        missing = uids(json.loads(path.read_text())) - known - {"-- Grafana --", "grafana"}
        if missing:
            sys.exit(f"grafana stand-in: {path.name} uses unprovisioned datasources {sorted(missing)}")
    print(f"grafana stand-in: {len(boards)} dashboards, datasources {sorted(known)}", flush=True)


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        ok = self.path == "/api/health"
        body = json.dumps(
            {"database": "ok", "version": "stand-in"} if ok else {"message": "Not found"}
        ).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


if __name__ == "__main__":
    check()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    HTTPServer(("0.0.0.0", 3000), Health).serve_forever()
