"""Grid state in Redis. Every change of state is one atomic Lua call, so concurrent workers never race.

Keys (`G` = `cotd:grid:<id>`):

| key | type | content |
|---|---|---|
| `cotd:grids` | zset | grid id -> submit time |
| `cotd:grids:open` | set | grids not finalized yet (what the workers' supervisors look after) |
| `G:meta` | hash | name, status (running/done/failed/cancelled), created_at, finished_at, n_cells, grid (JSON), finalized, reason |
| `G:cells` | hash | cell key -> pending / running / done / failed / cached / cancelled |
| `G:reasons` | hash | cell key -> why it failed |
| `G:labels` | hash | cell key -> `dataset/teacher/level/format/student/seed` |
| `G:counts` | hash | cell state -> number of cells |
| `G:art` | hash | `<stage>:<key>` -> pending / queued / running / done / cached / failed / cancelled |
| `G:stages` | hash | `<stage>:<state>` -> artifacts, `<stage>:total`, `<stage>:computed` (built, not cached) |
| `G:specs` | hash | `<stage>:<key>` -> the task's message (JSON) |
| `G:next` | hash | `<stage>:<key>` -> JSON list of the `<stage>:<key>` that wait for it |
| `G:cells_of` | hash | `<stage>:<key>` -> JSON list of the cell keys that need it |
| `G:tasks` | hash | `<stage>:<key>` -> Celery task id (for cancel) |
| `G:lapsed` | hash | `<stage>:<key>` -> when a supervisor first saw it running without a lease |
| `G:finalizing` | string | the claim of the worker writing the results (expires) |
| `cotd:executions` | hash | stage -> artifacts built (not cached), all grids |

A cell's key is its evaluation's key. A cell is the unit a user sees; an artifact (one CoT set,
checkpoint or evaluation) is the unit of work, shared by every cell that needs it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import redis

CELL_STATES = ("pending", "running", "done", "failed", "cached", "cancelled")
ACTIVE_CELL = ("pending", "running")
ACTIVE_ART = ("pending", "queued", "running")
GRIDS_KEY = "cotd:grids"
OPEN_KEY = "cotd:grids:open"
FINALIZE_CLAIM_S = 300
"""A finalizing worker that dies frees its claim after this; a supervisor then finalizes the grid."""
EXECUTIONS_KEY = "cotd:executions"

# KEYS: states hash, counts hash, reasons hash. ARGV: count prefix, new state, allowed-from (comma list),
# reason ('' = none), fields... Returns the fields that changed.
_TRANSITION = """
local allowed = {}
for s in string.gmatch(ARGV[3], '([^,]+)') do allowed[s] = true end
local changed = {}
for i = 5, #ARGV do
  local f = ARGV[i]
  local cur = redis.call('HGET', KEYS[1], f)
  if cur and allowed[cur] and cur ~= ARGV[2] then
    redis.call('HSET', KEYS[1], f, ARGV[2])
    redis.call('HINCRBY', KEYS[2], ARGV[1] .. cur, -1)
    redis.call('HINCRBY', KEYS[2], ARGV[1] .. ARGV[2], 1)
    if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], f, ARGV[4]) end
    table.insert(changed, f)
  end
end
return changed
"""


def art_id(stage: str, key: str) -> str:
    """The field naming one artifact of a grid: `<stage>:<key>`."""
    return f"{stage}:{key}"


def split_id(aid: str) -> tuple[str, str]:
    """`<stage>:<key>` -> (stage, key)."""
    stage, key = aid.split(":", 1)
    return stage, key


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class GridState:
    """One grid's state in Redis."""

    def __init__(self, r: redis.Redis, grid_id: str) -> None:
        self.r = r
        self.id = grid_id
        self.prefix = f"cotd:grid:{grid_id}"
        self._transition = r.register_script(_TRANSITION)

    def k(self, name: str) -> str:
        """The Redis key `cotd:grid:<id>:<name>`."""
        return f"{self.prefix}:{name}"

    # ------------------------------------------------------------------ creation
    def create(
        self,
        meta: dict[str, Any],
        cells: dict[str, str],
        labels: dict[str, str],
        arts: dict[str, str],
        specs: dict[str, str],
        nexts: dict[str, list[str]],
        cells_of: dict[str, list[str]],
    ) -> None:
        """Write a new grid's whole state in one transaction."""
        counts: dict[str, int] = {}
        for st in cells.values():
            counts[st] = counts.get(st, 0) + 1
        stages: dict[str, int] = {}
        for aid, st in arts.items():
            stage = split_id(aid)[0]
            stages[f"{stage}:{st}"] = stages.get(f"{stage}:{st}", 0) + 1
            stages[f"{stage}:total"] = stages.get(f"{stage}:total", 0) + 1
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.k("meta"), mapping={k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()})
        for name, mapping in (
            ("cells", cells),
            ("labels", labels),
            ("counts", {s: counts.get(s, 0) for s in CELL_STATES}),
            ("art", arts),
            ("stages", stages),
            ("specs", specs),
            ("next", {k: json.dumps(v) for k, v in nexts.items()}),
            ("cells_of", {k: json.dumps(v) for k, v in cells_of.items()}),
        ):
            if mapping:
                pipe.hset(self.k(name), mapping=mapping)
        pipe.zadd(GRIDS_KEY, {self.id: time.time()})
        pipe.sadd(OPEN_KEY, self.id)
        pipe.execute()

    # ------------------------------------------------------------------ reading
    def exists(self) -> bool:
        """Whether the grid was submitted."""
        return bool(self.r.exists(self.k("meta")))

    def meta(self) -> dict[str, str]:
        """The grid's meta hash (strings)."""
        return {_s(k): _s(v) for k, v in self.r.hgetall(self.k("meta")).items()}

    def status(self) -> str | None:
        """running / done / failed / cancelled, or None for an unknown grid."""
        v = self.r.hget(self.k("meta"), "status")
        return _s(v) if v is not None else None

    def counts(self) -> dict[str, int]:
        """Cells per state."""
        raw = {_s(k): int(v) for k, v in self.r.hgetall(self.k("counts")).items()}
        return {s: raw.get(s, 0) for s in CELL_STATES}

    def stage_counts(self) -> dict[str, dict[str, int]]:
        """Per stage: artifacts per state, total, computed."""
        out: dict[str, dict[str, int]] = {}
        for f, v in self.r.hgetall(self.k("stages")).items():
            stage, what = _s(f).split(":", 1)
            out.setdefault(stage, {})[what] = int(v)
        return out

    def cells(self) -> dict[str, str]:
        """cell key -> state."""
        return {_s(k): _s(v) for k, v in self.r.hgetall(self.k("cells")).items()}

    def hash(self, name: str) -> dict[str, str]:
        """Any of the grid's hashes, decoded."""
        return {_s(k): _s(v) for k, v in self.r.hgetall(self.k(name)).items()}

    def get(self, name: str, field: str) -> str | None:
        """One field of one of the grid's hashes."""
        v = self.r.hget(self.k(name), field)
        return _s(v) if v is not None else None

    def json_list(self, name: str, field: str) -> list[str]:
        """A JSON-list field (`next`, `cells_of`), [] when absent."""
        v = self.get(name, field)
        return json.loads(v) if v else []

    # ------------------------------------------------------------------ transitions
    def set_cells(self, cell_keys: Iterable[str], new: str, allowed: Iterable[str] = ACTIVE_CELL, reason: str = "") -> list[str]:
        """Move cells to `new` if they are in `allowed`; returns those that moved."""
        keys = list(cell_keys)
        if not keys:
            return []
        out = self._transition(
            keys=[self.k("cells"), self.k("counts"), self.k("reasons")], args=["", new, ",".join(allowed), reason, *keys]
        )
        return [_s(x) for x in out]

    def set_art(self, aids: Iterable[str], new: str, allowed: Iterable[str] = ACTIVE_ART) -> list[str]:
        """Move artifacts (`<stage>:<key>`, all of one stage) to `new`; returns those that moved."""
        ids = list(aids)
        if not ids:
            return []
        stage = split_id(ids[0])[0]
        out = self._transition(
            keys=[self.k("art"), self.k("stages"), self.k("reasons")], args=[f"{stage}:", new, ",".join(allowed), "", *ids]
        )
        return [_s(x) for x in out]

    def count_computed(self, stage: str) -> None:
        """One artifact of `stage` was built (not found cached)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hincrby(self.k("stages"), f"{stage}:computed", 1)
        pipe.hincrby(EXECUTIONS_KEY, stage, 1)
        pipe.execute()

    def descendants(self, aid: str) -> list[str]:
        """Every artifact that waits, directly or not, on `aid`."""
        out, todo = [], list(self.json_list("next", aid))
        while todo:
            a = todo.pop()
            out.append(a)
            todo.extend(self.json_list("next", a))
        return out

    def fail(self, aid: str, reason: str) -> list[str]:
        """Fail an artifact, what waits on it, and every cell that needs it; returns the failed cells."""
        self.set_art([aid], "failed")
        by_stage: dict[str, list[str]] = {}
        for d in self.descendants(aid):
            by_stage.setdefault(split_id(d)[0], []).append(d)
        for ids in by_stage.values():
            self.set_art(ids, "failed", allowed=("pending", "queued"))
        return self.set_cells(self.json_list("cells_of", aid), "failed", reason=reason)

    def finish_claim(self) -> bool:
        """True for one caller at a time once no cell is pending or running and the grid is not finalized.

        The claim expires (`FINALIZE_CLAIM_S`): a caller that dies before `finish` leaves the grid to
        the next claimant (a worker's supervisor), so no grid stays "running" for good.
        """
        c = self.counts()
        if c["pending"] or c["running"] or self.r.hget(self.k("meta"), "finalized"):
            return False
        return bool(self.r.set(self.k("finalizing"), "1", nx=True, ex=FINALIZE_CLAIM_S))

    def finish(self, status: str, reason: str = "") -> None:
        """Record the final status (and why it failed, if not because of its cells); the grid is closed."""
        fields = {"status": status, "finished_at": f"{time.time():.3f}", "finalized": "1"}
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.k("meta"), mapping=fields | ({"reason": reason} if reason else {}))
        pipe.srem(OPEN_KEY, self.id)
        pipe.delete(self.k("finalizing"))
        pipe.execute()

    def set_meta(self, **fields: str) -> None:
        """Update fields of the meta hash."""
        self.r.hset(self.k("meta"), mapping=fields)


def open_grids(r: redis.Redis) -> list[str]:
    """The grids not finalized yet."""
    return sorted(_s(x) for x in r.smembers(OPEN_KEY))


def list_grids(r: redis.Redis, limit: int = 50) -> list[str]:
    """The most recent grid ids, newest first."""
    return [_s(x) for x in r.zrevrange(GRIDS_KEY, 0, limit - 1)]


def executions(r: redis.Redis) -> dict[str, int]:
    """Artifacts built (not cached) per stage, over all grids."""
    return {_s(k): int(v) for k, v in r.hgetall(EXECUTIONS_KEY).items()}
