"""Settings secrets (placeholders refused, Redis password), URL redaction, and the metrics bind address."""

from __future__ import annotations

import logging
import urllib.request

import pytest

from shared import settings as settings_mod
from shared.redact import RedactFilter, redact
from shared.settings import SettingsError, load_settings

PLACEHOLDERS = {
    "COTD_S3_SECRET_KEY": "change-me-to-another-long-random-string",
    "COTD_S3_ACCESS_KEY": "change-me-admin",
    "COTD_REDIS_PASSWORD": "change-me-to-a-long-random-redis-password",
    "COTD_REDIS_URL": "redis://:change-me@redis:6379/0",
}


@pytest.mark.parametrize(("var", "value"), PLACEHOLDERS.items(), ids=list(PLACEHOLDERS))
def test_env_example_placeholders_are_refused_naming_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as exc:
        load_settings()
    text = str(exc.value)
    assert text == f"{var}: still the change-me... placeholder from .env.example; set a real secret"
    assert value not in text


def test_env_example_holds_only_refused_placeholders_for_cotd_secrets():
    from tests.conftest import REPO_ROOT

    lines = dict(
        ln.split("=", 1)
        for ln in (REPO_ROOT / ".env.example").read_text().splitlines()
        if "=" in ln and ln[0] != "#"
    )
    assert lines["REDIS_PASSWORD"].startswith("change-me")
    assert lines["COTD_S3_SECRET_KEY"].startswith("change-me")


def test_a_bad_setting_is_one_line_without_its_value(monkeypatch):
    monkeypatch.setenv("COTD_LEASE_TTL_S", "-5")
    with pytest.raises(SettingsError, match=r"^COTD_LEASE_TTL_S: Input should be greater than 0$"):
        load_settings()


def test_redis_password_is_filled_into_the_url_quoted(monkeypatch):
    monkeypatch.setenv("COTD_REDIS_URL", "redis://redis:6379/2")
    monkeypatch.setenv("COTD_REDIS_PASSWORD", "p@ss:w/rd")
    s = load_settings()
    assert s.redis_url == "redis://:p%40ss%3Aw%2Frd@redis:6379/2"
    assert "p%40ss" not in repr(s) and "p@ss" not in repr(s)
    import redis

    assert redis.Redis.from_url(s.redis_url).connection_pool.connection_kwargs["password"] == "p@ss:w/rd"


def test_a_password_already_in_the_url_wins(monkeypatch):
    monkeypatch.setenv("COTD_REDIS_URL", "redis://user:inurl@redis:6379/0")
    monkeypatch.setenv("COTD_REDIS_PASSWORD", "other")
    assert load_settings().redis_url == "redis://user:inurl@redis:6379/0"


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("no grid 'x' in redis://:s3cret@h:6379/0", "no grid 'x' in redis://:***@h:6379/0"),
        ("redis://user:pw@h/1 and rediss://u:p%40@h2:1/0", "redis://user:***@h/1 and rediss://u:***@h2:1/0"),
        ("http://h/path@x and redis://h:6379/0", "http://h/path@x and redis://h:6379/0"),
    ],
)
def test_redact(text, clean):
    assert redact(text) == clean


def test_log_filter_redacts_messages_and_tracebacks():
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    h = Keep()
    h.addFilter(RedactFilter())
    log = logging.getLogger("cotd.test.redact")
    log.addHandler(h)
    try:
        log.error("cannot reach %s", "redis://:hunter2@h:1/0")
        try:
            raise ConnectionError("redis://:hunter2@h:1/0 refused")
        except ConnectionError:
            log.exception("failed")
    finally:
        log.removeHandler(h)
    assert len(records) == 2 and all("hunter2" not in r for r in records)
    assert "redis://:***@h:1/0" in records[0] and "redis://:***@h:1/0 refused" in records[1]


def test_metrics_server_binds_loopback_by_default_and_the_setting_otherwise(monkeypatch):
    from shared.metrics import start_metrics_server

    for env, want in ((None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")):
        if env:
            monkeypatch.setenv("COTD_METRICS_HOST", env)
        settings_mod.get_settings.cache_clear()
        server, _ = start_metrics_server(0)
        try:
            assert server.server_address[0] == want
            with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5) as r:  # noqa: S310
                assert r.status == 200
        finally:
            server.shutdown()
            server.server_close()
    settings_mod.get_settings.cache_clear()


def _compose() -> dict:
    import yaml

    from tests.conftest import REPO_ROOT

    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]


def test_compose_requires_a_redis_password_everywhere():
    svcs = _compose()
    redis_cmd = svcs["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    assert svcs["redis"]["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")  # the healthcheck's
    for name in ("generator", "trainer", "evaluator", "generator-cpu", "trainer-cpu", "evaluator-cpu"):
        env = svcs[name]["environment"]
        assert env["COTD_REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?"), name
        assert env["COTD_METRICS_HOST"] == "0.0.0.0", name  # set explicitly; the code's default is loopback


@pytest.mark.parametrize(
    ("root_pw", "s3_secret", "refused"),
    [
        ("change-me-to-a-long-random-string", "real-1", "MINIO_ROOT_PASSWORD"),
        ("real-2", "change-me-x", "COTD_S3_SECRET_KEY"),
        ("real-3", "real-4", None),
    ],
)
def test_minio_init_stops_on_a_placeholder_password(root_pw, s3_secret, refused):
    import os
    import subprocess

    script = _compose()["minio-init"]["command"][0].replace("$$", "$")
    checks = script.split("mc alias")[0]  # the part before any mc call
    env = {**os.environ, "MINIO_ROOT_PASSWORD": root_pw, "COTD_S3_SECRET_KEY": s3_secret}
    res = subprocess.run(
        ["sh", "-ec", checks + "echo checked"], env=env, capture_output=True, text=True, timeout=10
    )
    if refused:
        assert res.returncode == 1 and res.stdout.strip() == f"{refused}: still the change-me... placeholder"
    else:
        assert res.returncode == 0 and res.stdout.strip() == "checked"
