"""What a worker's operator allows a grid to make the worker do (settings, never the grid's say).

- `api_key_env` may name only variables on the operator's allow-list (`COTD_API_KEY_ENV_ALLOW`), never a
  `COTD_*` one; checked at submit and again on the worker right before the variable is read.
- Files a queue message names (dataset files, recorded- and human-teacher files, local student models and
  .gguf files) are read by a worker only under `COTD_DATA_ROOTS`.
- `trust_remote_code: true` from a queue message needs `COTD_ALLOW_REMOTE_CODE=true` on the worker.

Embedded mode (`cotd run`) reads the user's own grid on the user's own machine: only the allow-list applies.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from shared.errors import CotdError
from shared.paths import under_roots
from shared.settings import Settings
from shared.specs import (
    CheckpointSpec,
    CotSetSpec,
    DatasetRef,
    EvalSpec,
    StudentSpec,
    TeacherSpec,
    recorded_path,
)
from shared.teacher_kinds import FILE_KINDS


class PolicyError(CotdError, ValueError):
    """The operator's settings do not allow what a grid or message asks for; one line naming the field."""


def api_key_env_allowed(name: str, patterns: list[str]) -> bool:
    """Whether `name` matches one of the allow-list `patterns` (a COTD_* variable never does)."""
    return not name.upper().startswith("COTD_") and any(fnmatchcase(name, p) for p in patterns)


def check_api_key_env(teacher: str, name: str | None, settings: Settings) -> None:
    """Raise PolicyError unless the teacher's `api_key_env` is on the allow-list."""
    if name and not api_key_env_allowed(name, settings.api_key_env_patterns):
        raise PolicyError(
            f"teacher {teacher}: api_key_env {name} is not allowed (COTD_API_KEY_ENV_ALLOW: {settings.api_key_env_allow})"
        )


def check_teachers(teachers: list[TeacherSpec], settings: Settings) -> None:
    """The submit-time check of a grid's teachers against this machine's allow-list."""
    for t in teachers:
        check_api_key_env(t.name, t.api_key_env, settings)


def _dataset_files(ref: DatasetRef, where: str) -> list[tuple[str, str]]:
    return [(f"{where}.{f}", p) for f in ("train_file", "test_file") if (p := getattr(ref, f))]


def _cot_files(cot: CotSetSpec) -> list[tuple[str, str]]:
    out = _dataset_files(cot.dataset, "dataset")
    if cot.teacher.kind in FILE_KINDS and cot.teacher.files:
        out.append(
            (f"teacher {cot.teacher.name}.files", recorded_path(cot.teacher.files, cot.level, cot.format))
        )
    return out


def _student_files(st: StudentSpec) -> list[tuple[str, str]]:
    m = st.model
    local = m.startswith(("/", ".", "~")) or m.endswith(
        ".gguf"
    )  # as the grid loader tells paths from hub ids
    return [(f"student {st.name}.model", m)] if local else []


def spec_files(spec: CotSetSpec | CheckpointSpec | EvalSpec) -> list[tuple[str, str]]:
    """Every local path a stage of `spec` may read, as (field, path)."""
    if isinstance(spec, CotSetSpec):
        return _cot_files(spec)
    if isinstance(spec, CheckpointSpec):
        return _cot_files(spec.cot) + _student_files(spec.student)
    return spec_files(spec.checkpoint) + _dataset_files(spec.dataset, "dataset")


def check_worker_spec(spec: CotSetSpec | CheckpointSpec | EvalSpec, settings: Settings) -> None:
    """A worker's check of a queued spec, before any file it names is opened; raises PolicyError."""
    roots = settings.data_root_paths
    for field, path in spec_files(spec):
        if not under_roots(path, roots):
            allowed = settings.data_roots or "unset, so no grid file is read"
            raise PolicyError(
                f"{field}: {path} is outside the worker's data roots (COTD_DATA_ROOTS: {allowed})"
            )
    student = _student_of(spec)
    if student is not None and student.trust_remote_code and not settings.allow_remote_code:
        raise PolicyError(
            f"student {student.name}: trust_remote_code is not allowed on this worker (COTD_ALLOW_REMOTE_CODE)"
        )


def _student_of(spec: CotSetSpec | CheckpointSpec | EvalSpec) -> StudentSpec | None:
    if isinstance(spec, CheckpointSpec):
        return spec.student
    if isinstance(spec, EvalSpec):
        return spec.checkpoint.student
    return None
