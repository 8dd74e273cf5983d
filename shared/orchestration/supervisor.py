"""Each worker's supervisor thread: it restarts the work of dead workers and closes finished grids.

Every `COTD_SUPERVISE_EVERY_S`, for each open grid (`cotd:grids:open`):

- an artifact that is `running` but whose lease (`shared.orchestration.lease`) is gone belongs to a
  dead worker: a live task renews its lease every `COTD_LEASE_TTL_S / 3`. Once no lease has been
  seen for `COTD_REQUEUE_AFTER_S - COTD_LEASE_TTL_S` (so about `COTD_REQUEUE_AFTER_S` after the
  last renewal), the artifact is moved from running to queued, which is the claim (one Lua
  transition: of all the workers' supervisors, one wins), and its task is sent again. The new task
  resumes from the scratch state where it lands on the same node. A healthy task, however long,
  holds its lease and is never sent twice. The dead worker's own message comes back only after
  the broker's visibility timeout, and then finds the artifact built (or being built) and does
  nothing;
- a grid whose cells have all ended but that is not finalized (its finalizing worker died) is
  finalized;
- the worker stops or resumes taking tasks by the free space of its cache disk (`disk.DiskGuard`).
"""

from __future__ import annotations

import logging
import threading
import time

from shared.orchestration.context import Context
from shared.orchestration.disk import DiskGuard
from shared.orchestration.lease import lease_name
from shared.orchestration.state import OPEN_KEY, GridState, open_grids, split_id
from shared.orchestration.submit import enqueue, finalize
from shared.queues import ARTIFACT_KIND, Queue

log = logging.getLogger("cotd.supervisor")


def lapsed(running: list[str], seen: dict[str, str], has_lease: dict[str, bool], now: float, wait_s: float) -> tuple[list[str], dict[str, float], list[str]]:
    """Decide from one look at a grid (pure): (artifacts to requeue, first-seen marks to add, marks to drop).

    `seen` holds when each artifact was first seen running without a lease; an artifact is
    requeued once that is at least `wait_s` ago (and never on the first sighting).
    """
    requeue, mark = [], {}
    drop = [a for a in seen if a not in running or has_lease.get(a)]
    for aid in running:
        if has_lease[aid]:
            continue
        if aid not in seen:
            mark[aid] = now
        elif now - float(seen[aid]) >= wait_s:
            requeue.append(aid)
    return requeue, mark, drop


class Supervisor:
    """Look after the open grids every `every_s` seconds, in a daemon thread."""

    def __init__(self, ctx: Context, guard: DiskGuard | None = None) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.guard = guard
        self.every_s = s.supervise_every_s
        self.wait_s = max(0.0, s.requeue_after_s - s.lease_ttl_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Supervisor:
        self._thread = threading.Thread(target=self._run, name="cotd-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if self.guard is not None:
                    self.guard.check()
                self.run_once()
            except Exception as e:  # Redis or S3 away: try again next time
                log.warning("supervisor: %s: %s", type(e).__name__, e)

    def run_once(self) -> dict[str, list[str]]:
        """One pass over the open grids; returns what was requeued and finalized."""
        out: dict[str, list[str]] = {"requeued": [], "finalized": []}
        r = self.ctx.redis
        for gid in open_grids(r):
            gs = GridState(r, gid)
            status = gs.status()
            if status is None:
                r.srem(OPEN_KEY, gid)
                continue
            if status == "running":
                out["requeued"] += [f"{gid}/{a}" for a in self._requeue_lapsed(gs)]
            if gs.finish_claim():
                log.warning("grid %s: finalizing (its cells have all ended)", gid)
                finalize(self.ctx, gs)
                out["finalized"].append(gid)
        return out

    def _requeue_lapsed(self, gs: GridState) -> list[str]:
        r = self.ctx.redis
        running = [a for a, st in gs.hash("art").items() if st == "running"]
        seen = gs.hash("lapsed")
        if not running and not seen:
            return []
        pipe = r.pipeline(transaction=False)
        for aid in running:
            stage, key = split_id(aid)
            pipe.exists(lease_name(ARTIFACT_KIND[Queue(stage)], key))
        has_lease = {a: bool(n) for a, n in zip(running, pipe.execute(), strict=True)}
        requeue, mark, drop = lapsed(running, seen, has_lease, time.time(), self.wait_s)
        for aid, t in mark.items():  # the earliest sighting of any supervisor counts
            r.hsetnx(gs.k("lapsed"), aid, f"{t:.3f}")
        if drop or requeue:
            r.hdel(gs.k("lapsed"), *drop, *requeue)
        sent: list[str] = []
        by_stage: dict[str, list[str]] = {}
        for aid in requeue:
            by_stage.setdefault(split_id(aid)[0], []).append(aid)
        for ids in by_stage.values():
            sent += enqueue(self.ctx, gs, ids, allowed=("running",))
        for aid in sent:
            log.warning("grid=%s artifact=%s: lease lapsed (worker lost); enqueued again", gs.id, aid)
        return sent
