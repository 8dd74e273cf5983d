"""The experiment grid: a YAML file, validated by pydantic, expanded into cells.

A cell is dataset x teacher x level x format x student x seed. Teachers that write no
levels (answer-only, human) give one cell per format-free combination, with level null; a teacher
with its own `levels` / `formats` uses those instead of the grid's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.config import EvaluationConfig, Format, TrainingConfig, apply_overrides
from shared.errors import CotdError
from shared.specs import (
    CheckpointSpec,
    CotSetSpec,
    DatasetRef,
    EvalSpec,
    Name,
    Seed,
    StudentSpec,
    TeacherSpec,
)
from shared.teacher_kinds import TEACHER_KINDS, teacher_problems


class GridError(CotdError, ValueError):
    """A grid file is invalid; the message is one line naming the file and the field."""


class GridSpec(BaseModel):
    """An experiment grid (the YAML file's top level)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name = Field(description="Grid name, used in results, reports and the grid id (see NAME_PATTERN).")
    datasets: list[DatasetRef] = Field(min_length=1, description="Datasets to train and test on.")
    teachers: list[TeacherSpec] = Field(min_length=1, description="Teachers that write the CoT sets.")
    levels: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6], min_length=1, description="Granularity levels."
    )
    formats: list[Format] = Field(default_factory=lambda: ["cot"], min_length=1, description="CoT formats.")
    students: list[StudentSpec] = Field(min_length=1, description="Student models.")
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="Training settings for every student."
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, description="Decoding and scoring settings."
    )
    seeds: list[Seed] = Field(
        default_factory=lambda: [100], min_length=1, description="Training seeds, each below 2**32."
    )

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        for lv in v:
            if not 1 <= lv <= 6:
                raise ValueError(f"levels must be between 1 and 6, got {lv}")
        if len(set(v)) != len(v):
            raise ValueError("levels repeat")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> GridSpec:
        for field in ("teachers", "students"):
            names = [x.name for x in getattr(self, field)]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"{field}: duplicate name {sorted(dup)[0]!r}")
        for i, t in enumerate(self.teachers):
            for field, problem in teacher_problems(t, [d.name for d in self.datasets])[:1]:
                raise ValueError(f"teachers[{i}].{field}: {problem}")
            for lv in t.levels or []:
                if not 1 <= lv <= 6:
                    raise ValueError(f"teachers[{i}].levels: must be between 1 and 6, got {lv}")
        for i, s in enumerate(self.students):
            if s.model.endswith(".gguf") and not Path(s.model).expanduser().is_file():
                raise ValueError(f"students[{i}].model: no such GGUF file {s.model}")
        return self


class Cell(BaseModel):
    """One point of the grid, with the specs of its three artifacts."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    teacher: str
    teacher_kind: str
    level: int | None
    format: str | None
    student: str
    seed: int
    cot: CotSetSpec
    checkpoint: CheckpointSpec
    evaluation: EvalSpec

    @property
    def key(self) -> str:
        """The cell's key: its evaluation's key (unique per cell)."""
        return self.evaluation.key

    def label(self) -> str:
        """A short human-readable name."""
        lvl = f"L{self.level}" if self.level is not None else "-"
        return f"{self.dataset}/{self.teacher}/{lvl}/{self.format or '-'}/{self.student}/s{self.seed}"


def prompt_version(kind: str) -> str:
    """The version of whatever turns questions into rationales for this teacher kind."""
    return TEACHER_KINDS[kind].prompt_version


def expand(grid: GridSpec) -> list[Cell]:
    """Every cell of the grid, in a stable order."""
    cells = []
    for ds in grid.datasets:
        for t in grid.teachers:
            levels, formats = t.levels or grid.levels, t.formats or grid.formats
            combos: list[tuple[int | None, str | None]] = (
                [(lv, f) for lv in levels for f in formats] if t.uses_levels else [(None, None)]
            )
            for level, fmt in combos:
                cot = CotSetSpec(
                    dataset=ds, teacher=t, level=level, format=fmt, prompt_version=prompt_version(t.kind)
                )
                for st in grid.students:
                    training = apply_overrides(grid.training, st.training)
                    if st.method:
                        training = training.model_copy(update={"method": st.method})
                    for seed in grid.seeds:
                        ck = CheckpointSpec(cot=cot, student=st, training=training, seed=seed)
                        ev = EvalSpec(checkpoint=ck, dataset=ds, evaluation=grid.evaluation)
                        cells.append(
                            Cell(
                                dataset=ds.name,
                                teacher=t.name,
                                teacher_kind=t.kind,
                                level=level,
                                format=fmt,
                                student=st.name,
                                seed=seed,
                                cot=cot,
                                checkpoint=ck,
                                evaluation=ev,
                            )
                        )
    return cells


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(err: dict[str, Any]) -> str:
    t = err["type"]
    ctx = err.get("ctx") or {}
    if t in ("literal_error", "enum") and "expected" in ctx:
        opts = [o.strip().strip("'") for o in str(ctx["expected"]).replace(" or ", ", ").split(",")]
        return "must be one of " + ", ".join(o for o in opts if o)
    if t == "extra_forbidden":
        return "unknown field"
    if t == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One line: `file: field.path: message` for the first error (and how many more)."""
    errs = exc.errors()
    first = errs[0]
    loc = _loc(tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    where = f"{loc}: " if loc else ""
    return f"{source}: {where}{_message(first)}{more}"


def parse_grid(data: Any, source: str = "grid") -> GridSpec:
    """Validate a grid from parsed YAML/JSON; raises GridError with one line naming the field."""
    if not isinstance(data, dict):
        raise GridError(f"{source}: the grid must be a mapping of fields, got {type(data).__name__}")
    try:
        return GridSpec.model_validate(data)
    except ValidationError as e:
        raise GridError(format_validation_error(source, e)) from None


def load_grid(path: str | Path) -> GridSpec:
    """Load and validate a grid YAML file; relative data paths are resolved against its folder."""
    p = Path(path)
    name = p.name
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GridError(f"{name}: no such file") from None
    except OSError as e:
        raise GridError(f"{name}: cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise GridError(f"{name}: {where}invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if isinstance(data, dict):
        data = _resolve_paths(data, p.resolve().parent)
    return parse_grid(data, name)


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make local paths absolute, relative to the grid file's folder.

    Dataset files and recorded-teacher files are always paths; a student's `model` is a path
    only when it starts with ".", names a `.gguf` file or an existing folder (otherwise a hub id).
    """

    def path(v: Any) -> Any:
        return str((base / v).resolve()) if isinstance(v, str) and v and not Path(v).is_absolute() else v

    out = dict(data)
    for ds in out.get("datasets") or []:
        if isinstance(ds, dict):
            for f in ("train_file", "test_file"):
                if f in ds:
                    ds[f] = path(ds[f])
    for t in out.get("teachers") or []:
        if isinstance(t, dict) and isinstance(t.get("files"), dict):
            t["files"] = {k: path(v) for k, v in t["files"].items()}
        elif isinstance(t, dict) and "files" in t:
            t["files"] = path(t["files"])
    for s in out.get("students") or []:
        m = s.get("model") if isinstance(s, dict) else None
        if isinstance(m, str) and (m.startswith(".") or m.endswith(".gguf") or (base / m).is_dir()):
            s["model"] = path(m)
    return out
