"""Distributed mode: grids submitted to Redis queues, served by Celery workers, artifacts in S3/MinIO.

- `state`: grid and cell states in Redis (atomic transitions by Lua scripts).
- `submit`: expand a grid, de-duplicate its work, enqueue what is missing.
- `tasks`: the Celery tasks (one per stage) that run `shared.stages` and enqueue successors.
- `worker`: `cotd worker ROLE` (Celery worker + Prometheus `/metrics`).
- `cli`: the `cotd grid` and `cotd worker` commands.
"""
