"""Issue #18.4: a grid cannot make a worker send its secrets to a server of the submitter's choosing.

Real Redis, a moto S3 server, a real `cotd worker generator` process, and a real HTTP server on loopback
(the teacher `base_url` a submitter picks) that records the Authorization header of every request.
"""

from __future__ import annotations

import json

import pytest
import yaml
from aiohttp import web

from shared.orchestration.context import Context
from shared.orchestration.state import GridState
from shared.policy import PolicyError
from shared.queues import TASK_NAMES, Queue
from tests.faults.queue_cluster import QueueCluster, queue_cluster
from tests.integration.services import S3_SECRET, wait_for
from tests.integration.test_generator_faults import FaultServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 4
BUCKET = "cotd-sec-secrets"
ALLOWED_KEY = "sk-allowed-teacher-key"
OTHER_SECRET = "not-on-the-allow-list"


class Recorder(FaultServer):
    """An OpenAI-compatible server that records every request's Authorization header."""

    def __init__(self) -> None:
        super().__init__()
        self.auth: list[str] = []

    async def chat(self, request: web.Request) -> web.Response:
        self.auth.append(request.headers.get("Authorization", ""))
        return await super().chat(request)


@pytest.fixture(scope="module")
def cluster():
    with (
        Recorder() as server,
        queue_cluster(REDIS_DB, BUCKET, TEACHER_API_KEY=ALLOWED_KEY, EXTRA_TOKEN=OTHER_SECRET) as c,
    ):
        c.server = server
        c.worker("generator")
        yield c


def ctx_for(c: QueueCluster, **settings) -> Context:
    """A submitter's context; `settings` stand for the submitter's own (untrusted) environment."""
    return Context(c.ctx.settings.model_copy(update=settings))


def openai_grid(c: QueueCluster, name: str, api_key_env: str) -> dict:
    return {
        "name": name,
        "datasets": [{"name": "arith", "train_size": 3, "test_size": 2}],
        "teachers": [
            {
                "name": "remote",
                "kind": "openai",
                "model": f"model-{name}",  # its own CoT set key per test
                "base_url": c.server.url,
                "api_key_env": api_key_env,
                "max_retries": 0,
            }
        ],
        "levels": [1],
        "students": [{"name": "xs", "model": "tiny:xs"}],
    }


def submit(c: QueueCluster, doc: dict, ctx: Context):
    from shared.grid import load_grid
    from shared.orchestration.submit import submit_grid

    path = c.root / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return submit_grid(load_grid(path), ctx)


def generate_state(ctx: Context, grid_id: str) -> tuple[str | None, str]:
    gs = GridState(ctx.redis, grid_id)
    aid = next(a for a in gs.hash("art") if a.startswith("generate:"))
    return gs.get("art", aid), next(iter(gs.hash("reasons").values()), "")


def test_an_allowed_api_key_reaches_the_teacher(cluster):
    """The positive control: the recorder sees the key of an allowed variable, and nothing else."""
    ctx = ctx_for(cluster)
    before = len(cluster.server.auth)
    res = submit(cluster, openai_grid(cluster, "sec-allowed", "TEACHER_API_KEY"), ctx)
    wait_for(lambda: generate_state(ctx, res.grid_id)[0] == "done", 60, "the CoT set", interval=0.3)
    seen = cluster.server.auth[before:]
    assert len(seen) == 3 and set(seen) == {f"Bearer {ALLOWED_KEY}"}


def test_submit_refuses_an_api_key_env_off_the_allow_list(cluster):
    with pytest.raises(PolicyError, match=r"^teacher remote: api_key_env EXTRA_TOKEN is not allowed"):
        submit(cluster, openai_grid(cluster, "sec-refused", "EXTRA_TOKEN"), ctx_for(cluster))


def test_the_worker_refuses_it_even_when_the_submitter_allowed_it(cluster):
    """A submitter controls its own settings, so the worker checks its own allow-list before reading the variable."""
    ctx = ctx_for(cluster, api_key_env_allow="*")
    before = len(cluster.server.auth)
    res = submit(cluster, openai_grid(cluster, "sec-extra", "EXTRA_TOKEN"), ctx)
    wait_for(lambda: generate_state(ctx, res.grid_id)[0] == "failed", 60, "the CoT set to fail", interval=0.3)
    state, reason = generate_state(ctx, res.grid_id)
    assert "api_key_env EXTRA_TOKEN is not allowed (COTD_API_KEY_ENV_ALLOW: *_API_KEY,HF_TOKEN)" in reason
    assert cluster.server.auth[before:] == []  # not one request was sent
    assert OTHER_SECRET not in cluster.workers[0].log()


def test_a_crafted_message_naming_a_cotd_secret_is_rejected_unsent(cluster):
    """The issue's attack: `api_key_env: COTD_S3_SECRET_KEY` in a message written by hand (submit would refuse it)."""
    ctx = ctx_for(cluster)
    res = submit(
        cluster,
        {
            **openai_grid(cluster, "sec-cotd", "TEACHER_API_KEY"),
            "teachers": [{"name": "p", "kind": "procedural"}],
        },
        ctx,
    )
    gs = GridState(ctx.redis, res.grid_id)
    payload = json.loads(gs.get("specs", next(a for a in gs.hash("specs") if a.startswith("generate:"))))
    payload["cot"]["teacher"] = openai_grid(cluster, "sec-evil", "COTD_S3_SECRET_KEY")["teachers"][0]
    before = len(cluster.server.auth)
    sent = ctx.app.send_task(
        TASK_NAMES[Queue.GENERATE], args=[payload], queue="generate", routing_key="generate"
    )
    log = cluster.workers[0]
    wait_for(lambda: f"rejected message {sent.id}" in log.log(), 30, "the worker to reject the message")
    line = next(ln for ln in log.log().splitlines() if f"rejected message {sent.id}" in ln)
    assert "cot.teacher.api_key_env" in line and "COTD_S3_SECRET_KEY is a cotd setting" in line
    assert cluster.server.auth[before:] == []
    assert all(S3_SECRET not in a for a in cluster.server.auth)
    assert S3_SECRET not in log.log()
