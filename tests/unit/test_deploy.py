"""Static checks of the deployment files: compose, Dockerfiles, Prometheus and Grafana provisioning."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared import metrics
from tests.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
COMPOSE_FILES = [COMPOSE, REPO_ROOT / "deploy" / "compose.gpus.example.yml"]
SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "compose-spec.json"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "cotd.json"
PROMETHEUS = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
DOCKERFILES = sorted((REPO_ROOT / "Dockerfiles").glob("*.Dockerfile"))
CONSTRAINTS = REPO_ROOT / "Dockerfiles" / "constraints.txt"
WORKERS = ("generator", "trainer", "evaluator")
SECRET_WORDS = ("KEY", "SECRET", "PASSWORD", "TOKEN")


def _is_secret(var: str) -> bool:
    """A variable whose name has KEY, SECRET, PASSWORD or TOKEN as one of its `_` parts."""
    return any(part in SECRET_WORDS for part in var.upper().split("_"))


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(COMPOSE)


def _services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return doc["services"]


def _depends(svc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    dep = svc.get("depends_on") or {}
    return {name: {"condition": "service_started"} for name in dep} if isinstance(dep, list) else dep


# ------------------------------------------------------------------------------------------- compose
@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_validates_against_the_compose_spec(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.is_file():
        pytest.skip(f"compose schema not found at {SCHEMA}")
    schema = json.loads(SCHEMA.read_text())
    # The spec says "https://json-schema.org/draft-07/schema", which jsonschema does not map by that URL.
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(_load(path)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_build_points_at_an_existing_dockerfile(path: Path) -> None:
    builds = 0
    for name, svc in _services(_load(path)).items():
        build = svc.get("build")
        if build is None:
            continue
        builds += 1
        context = REPO_ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert context.resolve() == REPO_ROOT.resolve(), f"{name}: builds use the repo root as context"
        assert (context / dockerfile).is_file(), f"{name}: {context / dockerfile} is missing"
    assert builds


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    names = set(_services(compose))
    expected = {"tgi", "redis", "minio", "minio-init", "prometheus", "grafana", "teacher-cpu", *WORKERS}
    assert expected <= names
    assert {f"{w}-cpu" for w in WORKERS} <= names


def test_workers_run_the_cli_with_the_right_environment(compose: dict[str, Any]) -> None:
    svcs = _services(compose)
    for name in [*WORKERS, *(f"{w}-cpu" for w in WORKERS)]:
        svc = svcs[name]
        stage = name.removesuffix("-cpu")
        assert svc["command"][:5] == ["cotd", "worker", stage, "--metrics-port", "9100"], name
        env = svc["environment"]
        assert env["COTD_REDIS_URL"] == "redis://redis:6379/0"
        assert env["COTD_S3_ENDPOINT"] == "minio:9000"
        assert env["COTD_S3_SECURE"] == "false"
        for var in ("COTD_S3_ACCESS_KEY", "COTD_S3_SECRET_KEY", "COTD_S3_BUCKET"):
            assert var in env, f"{name}: {var}"
        assert "ports" not in svc, f"{name}: a published port breaks --scale"
        assert "container_name" not in svc, f"{name}: a container_name breaks --scale"
    assert svcs["generator"]["environment"]["COTD_TEACHER_URL"] == "http://tgi:80"
    assert svcs["teacher-cpu"]["command"] == [
        "cotd",
        "teacher",
        "serve",
        "--model",
        "/models/teacher",
        "--host",
        "0.0.0.0",
        "--port",
        "80",
    ]


def test_cotd_healthchecks_probe_the_network_address(compose: dict[str, Any]) -> None:
    """A probe of 127.0.0.1 passes even when no other container can connect (the teacher-cpu bug)."""
    checked = 0
    for name, svc in _services(compose).items():
        if not str(svc.get("image", "")).startswith("cotd/") or "healthcheck" not in svc:
            continue
        test = svc["healthcheck"]["test"]
        assert test[1:5] == ["python", "-m", "shared.metrics", "--check"], name
        assert not any("127.0.0.1" in t or "localhost" in t for t in test), f"{name} probes loopback: {test}"
        checked += 1
    assert checked >= 1


def _gpu_devices(svc: dict[str, Any]) -> list[dict[str, Any]]:
    return (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []


def test_gpu_reservations(compose: dict[str, Any]) -> None:
    svcs = _services(compose)
    for name in ("tgi", "trainer", "evaluator"):
        devices = _gpu_devices(svcs[name])
        assert devices and "gpu" in devices[0]["capabilities"], name
    for name in ("generator", "teacher-cpu", *(f"{w}-cpu" for w in WORKERS)):
        assert not _gpu_devices(svcs[name]), f"{name} must not reserve a GPU"


def test_dependencies_use_health_conditions_and_healthchecks_exist(compose: dict[str, Any]) -> None:
    svcs = _services(compose)
    for name in [*WORKERS, *(f"{w}-cpu" for w in WORKERS)]:
        deps = _depends(svcs[name])
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["minio-init"]["condition"] == "service_completed_successfully", name
    assert _depends(svcs["generator"])["tgi"]["condition"] == "service_healthy"
    assert _depends(svcs["generator-cpu"])["teacher-cpu"]["condition"] == "service_healthy"
    assert _depends(svcs["minio-init"])["minio"]["condition"] == "service_healthy"
    for name, svc in svcs.items():
        for dep, spec in _depends(svc).items():
            assert dep in svcs, f"{name} depends on unknown {dep}"
            assert spec["condition"] != "service_started", f"{name} -> {dep}: use a health condition"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in svcs[dep], f"{dep} has service_healthy dependents but no healthcheck"


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_each_profile_has_a_closed_dependency_graph(compose: dict[str, Any], profile: str) -> None:
    svcs = _services(compose)
    active = {n for n, s in svcs.items() if not s.get("profiles") or profile in s["profiles"]}
    for name in active:
        for dep in _depends(svcs[name]):
            assert dep in active, f"profile {profile}: {name} depends on {dep}, which is not started"
    workers = {n.removesuffix("-cpu") for n in active if n.removesuffix("-cpu") in WORKERS}
    assert workers == set(WORKERS), f"profile {profile} lacks a worker kind"
    assert ("tgi" in active) == (profile == "gpu") and ("teacher-cpu" in active) == (profile == "cpu")


def test_persistence_and_private_bucket(compose: dict[str, Any]) -> None:
    svcs = _services(compose)
    assert "--appendonly" in svcs["redis"]["command"] and "yes" in svcs["redis"]["command"]
    assert svcs["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    for name in ("redis", "minio", "tgi", "prometheus", "grafana"):
        assert svcs[name].get("volumes"), f"{name} needs a volume"
    init = " ".join(svcs["minio-init"]["command"])
    assert "mc mb" in init
    assert not re.search(r"anonymous set (public|download|upload)|policy set public", init)
    assert "/health" in " ".join(svcs["tgi"]["healthcheck"]["test"])
    for name, svc in svcs.items():
        image = svc.get("image", "")
        if image and not image.startswith("cotd/"):
            assert ":" in image and not image.endswith((":latest", ":main")), f"{name}: pin the image tag"


_INTERP = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?([^}]*)\}")


@pytest.mark.parametrize("path", [*COMPOSE_FILES, REPO_ROOT / ".env.example"], ids=lambda p: p.name)
def test_no_secret_defaults(path: Path) -> None:
    text = path.read_text()
    for var, op, value in _INTERP.findall(text):
        if _is_secret(var) and op in ("-", ":-"):
            assert not value, f"{path.name}: ${{{var}{op}{value}}} gives a secret a default"
    if path.suffix == ".yml":
        doc = _load(path)
        for name, svc in _services(doc).items():
            env = svc.get("environment") or {}
            items = env.items() if isinstance(env, dict) else (e.partition("=")[::2] for e in env)
            for var, value in items:
                if _is_secret(var) and value not in (None, ""):
                    assert str(value).startswith("${") and ":?" in str(value), (
                        f"{name}: {var} must come from the environment, without a default"
                    )
    assert not re.search(r"minioadmin|AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{20,}", text), "literal credential"


def test_env_example_covers_every_required_variable() -> None:
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text()))
    example = (REPO_ROOT / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Z0-9_]+)=", example, re.M))
    assert required <= defined, f".env.example lacks {required - defined}"


def test_dockerignore_is_an_allow_list() -> None:
    lines = [ln.strip() for ln in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    assert "*" in lines
    for keep in ("!pyproject.toml", "!shared/", "!services/", "!Dockerfiles/constraints.txt"):
        assert keep in lines


# --------------------------------------------------------------------------------------- Dockerfiles
def test_one_dockerfile_two_images(compose: dict[str, Any]) -> None:
    """CPU PyTorch for the cpu profile and the generator; CUDA wheels only for the GPU trainer and evaluator."""
    assert [p.name for p in DOCKERFILES] == ["cotd.Dockerfile"]
    svcs = _services(compose)
    for name, svc in svcs.items():
        if "build" not in svc:
            continue
        cuda = name in ("trainer", "evaluator")
        assert svc["build"]["dockerfile"] == "Dockerfiles/cotd.Dockerfile", name
        assert svc["image"] == ("cotd/cuda:local" if cuda else "cotd/cpu:local"), name
        index = svc["build"]["args"]["TORCH_INDEX_URL"]
        assert ("/whl/cpu" in index) != cuda, f"{name}: {index}"
        assert set(svc["build"]["args"]) == {"BASE_IMAGE", "BUILDER_IMAGE", "TORCH_INDEX_URL"}, name


def _arg_defaults(instructions: list[str]) -> dict[str, str]:
    """`ARG NAME=default` values, with earlier ARGs substituted."""
    out: dict[str, str] = {}
    for ln in instructions:
        if ln.upper().startswith("ARG ") and "=" in ln:
            name, _, value = ln.split(None, 1)[1].partition("=")
            out[name] = re.sub(r"\$\{(\w+)\}", lambda mo: out.get(mo.group(1), mo.group(0)), value)
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_good_practice(path: Path) -> None:
    text = path.read_text()
    instructions = [
        ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines() if ln.strip() and not ln.startswith("#")
    ]
    args = _arg_defaults(instructions)
    stages = [ln.split()[3] for ln in instructions if ln.upper().startswith("FROM ") and " AS " in ln.upper()]
    froms = [
        re.sub(r"\$\{(\w+)\}", lambda mo: args[mo.group(1)], ln.split()[1])
        for ln in instructions
        if ln.upper().startswith("FROM ")
    ]
    assert froms and all(":" in f and not f.endswith(":latest") for f in froms if f not in stages), (
        f"pin the base image: {froms}"
    )
    users = [ln.split()[1] for ln in instructions if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the last USER must not be root"
    copies = [ln for ln in instructions if ln.upper().startswith(("COPY ", "ADD ")) and "--from=" not in ln]
    assert not any(re.match(r"(?i)(COPY|ADD)\s+\.\s", ln) for ln in copies), "no COPY . ."
    for ln in copies:
        sources = ln.split()[1:-1]
        for src in sources:
            assert src.rstrip("/") in (
                "pyproject.toml",
                "README.md",
                "shared",
                "services",
                "Dockerfiles/constraints.txt",
            ), f"{path.name} copies {src}"
    pip = [ln for ln in instructions if "pip install" in ln]
    assert pip and all("--no-cache-dir" in ln for ln in pip)
    assert any("-c Dockerfiles/constraints.txt ." in ln for ln in pip), (
        "install the project with the constraints"
    )
    assert any(ln.upper().startswith("EXPOSE ") and "9100" in ln for ln in instructions)
    assert any(ln.upper().startswith("HEALTHCHECK ") for ln in instructions)


def test_constraints_are_exact_and_cover_the_runtime_dependencies() -> None:
    from packaging.requirements import Requirement

    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"not an exact pin: {line}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    import tomllib

    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.sub(r"[-_.]+", "-", Requirement(dep).name).lower()
        if name != "torch":
            assert name in pins, f"{name} is not pinned in {CONSTRAINTS.name}"
    assert "torch" not in pins, "torch comes from the base image / CPU index, not the constraints"


def test_constraints_satisfy_pyproject() -> None:
    """Every pin of a direct dependency is inside pyproject.toml's range."""
    import tomllib

    from packaging.requirements import Requirement

    pins = dict(
        line.split("==", 1)
        for line in CONSTRAINTS.read_text().splitlines()
        if line and not line.startswith("#")
    )
    for dep in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(dep)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {dep}"


# ---------------------------------------------------------------------------------- Prometheus/Grafana
def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


_METRIC = re.compile(r"\bcotd_[a-z0-9_]+")


def _exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in _panels(dash) if p["type"] != "row" for t in p["targets"]]


def test_dashboard_panels_have_exprs_on_defined_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    known = metrics.series_names()
    panels = [p for p in _panels(dash) if p["type"] != "row"]
    assert len(panels) >= 15
    for p in panels:
        assert p.get("targets") and all(t.get("expr") for t in p["targets"]), f"{p['title']}: no expr"
        for t in p["targets"]:
            used = set(_METRIC.findall(t["expr"]))
            assert used, f"{p['title']}: expr uses no cotd metric"
            assert used <= known, f"{p['title']}: unknown metrics {used - known}"
    for var in dash["templating"]["list"]:
        assert set(_METRIC.findall(json.dumps(var.get("query", "")))) <= known
    assert any(p["type"] == "table" for p in panels)
    titles = " ".join(p["title"].lower() for p in panels)
    for word in ("queue", "loss", "memory", "accuracy", "latency", "429", "concurrency", "cells"):
        assert word in titles, word


def test_dashboard_covers_every_metric() -> None:
    used = set(_METRIC.findall(" ".join(_exprs())))
    documented = {n for n in metrics.metric_names() if n != "cotd_queue_scrape_errors_total"}
    series = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}
    assert documented <= series | used, f"not on the dashboard: {documented - series - used}"


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return tool


def test_promtool_accepts_the_prometheus_config() -> None:
    result = subprocess.run(
        [_promtool(), "check", "config", str(PROMETHEUS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_expr(tmp_path: Path) -> None:
    tool = _promtool()
    rules = []
    for i, expr in enumerate(_exprs()):
        expr = expr.replace("$__rate_interval", "5m").replace("$grid", ".*").replace("$stage", ".*")
        rules.append({"record": f"cotd:dashboard_expr_{i}", "expr": expr})
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_every_worker_by_dns() -> None:
    cfg = _load(PROMETHEUS)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    for worker in WORKERS:
        sd = jobs[worker]["dns_sd_configs"][0]
        assert sd["type"] == "A" and sd["port"] == 9100 and worker in sd["names"]


def test_grafana_provisioning_matches_the_dashboard() -> None:
    ds = _load(REPO_ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    uids = {d["uid"] for d in ds["datasources"]}
    dash = json.loads(DASHBOARD.read_text())
    for p in _panels(dash):
        if p["type"] != "row":
            assert p["datasource"]["uid"] in uids
    prov = _load(REPO_ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "cotd.yml")
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
