"""Static checks of the queue layer's settings: task events (#13.10), the pool that answers
`celery inspect` (#13.9), the poison-message hooks (#18.1) and the requeue delay (#18.2)."""

from __future__ import annotations

import yaml

from tests.conftest import REPO_ROOT


def test_task_events_follow_the_setting_and_compose_turns_them_on():
    from shared.celery_app import make_app
    from shared.settings import Settings

    assert Settings().task_events is False  # off outside compose
    on = make_app(Settings(task_events=True)).conf
    assert on.worker_send_task_events is True and on.task_send_sent_event is True
    assert make_app(Settings(task_events=False)).conf.worker_send_task_events is False
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    workers = [s for s in compose["services"].values() if "worker" in (s.get("command") or [])]
    assert len(workers) >= 3
    for svc in workers:
        assert Settings(**{"task_events": svc["environment"]["COTD_TASK_EVENTS"]}).task_events is True


def test_every_role_uses_a_pool_that_answers_control_messages():
    from shared.orchestration.worker import worker_argv

    for role in ("generator", "trainer", "evaluator"):
        argv = worker_argv(role, 1)
        assert argv[argv.index("--pool") + 1] == "threads" and argv[argv.index("--concurrency") + 1] == "1"


def test_the_app_uses_the_poison_hooks():
    from shared.celery_app import make_app
    from shared.orchestration.poison import Transport
    from shared.settings import Settings

    app = make_app(Settings())
    assert app.connection_for_read().get_transport_cls() is Transport
    assert app.conf.worker_consumer == "shared.orchestration.poison:Consumer"


def test_a_killed_task_restarts_within_two_minutes_by_default():
    from shared.settings import Settings

    s = Settings()
    assert s.requeue_after_s + 2 * s.supervise_every_s <= 120 < s.visibility_timeout_s
