"""The top floor: what runs the services' stage code over the library. Only this package (and `shared/cli.py`)
in `shared/` imports `services/` (tests/unit/test_layering.py holds it to that).

Embedded and distributed mode stand side by side over the same stage functions:

- `stages`: the three stage functions (generate, train, evaluate) over an artifact store.
- `embedded`: `cotd run`, a whole grid in-process; `results`: the rows of results.json.
- `report_cli`: the `cotd report` command; `plan`: `cotd grid plan`'s estimates.
- `state`: grid and cell states in Redis (atomic transitions by Lua scripts).
- `submit`: expand a grid, de-duplicate its work, enqueue what is missing.
- `tasks`: the Celery tasks (one per stage) that run `stages` and enqueue successors.
- `worker`: `cotd worker ROLE` (Celery worker + Prometheus `/metrics`).
- `cli`: the `cotd grid` and `cotd worker` commands.
"""
