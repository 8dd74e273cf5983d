"""Stage specs: what determines each artifact. Their `key` is the artifact's content key.

A CoT set is determined by its dataset split, teacher, level, format and prompt version;
a checkpoint by its CoT set, student, training settings and seed; an evaluation by its
checkpoint, test set and decoding settings. The same spec in two grids gives the same key.
"""

from __future__ import annotations

import re
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from shared.config import (
    MAX_ITEMS,
    MAX_SEED,
    MAX_TOKENS,
    EvaluationConfig,
    Format,
    Method,
    Template,
    TrainingConfig,
    TrainingOverrides,
)
from shared.datasets.arith import ArithParams
from shared.datasets.registry import DATASET_NAMES, DATASETS
from shared.keys import content_key, file_sha256
from shared.teacher_kinds import FILE_KINDS, TEACHER_KINDS

TeacherKind = Literal[tuple(TEACHER_KINDS)]  # type: ignore[valid-type]

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}"
"""Grid, teacher and student names: 1-64 letters, digits, `.`, `_`, `+`, `-`, starting with a letter or digit."""
ENV_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,127}"


def _name(v: str) -> str:
    if not re.fullmatch(NAME_PATTERN, v):
        raise ValueError(
            f"{v!r} is not a valid name: use 1-64 letters, digits, '.', '_', '+' or '-', starting with a letter "
            "or digit (no '/', spaces or control characters)"
        )
    return v


Name = Annotated[str, AfterValidator(_name)]
"""A label used in results, reports, metrics and log lines (see NAME_PATTERN)."""
Seed = Annotated[int, Field(ge=0, lt=MAX_SEED)]
"""A random seed, 0 <= seed < 2**32."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetRef(_Spec):
    """A dataset as a grid names it: hub or local files, with optional size limits."""

    name: str = Field(description=f"{', '.join(DATASET_NAMES[:-1])} or {DATASET_NAMES[-1]}.")
    train_file: str | None = Field(None, description="Local train file (questions with gold, or rationales).")
    test_file: str | None = Field(None, description="Local test file; the hub test split when absent.")
    train_size: int | None = Field(
        None, gt=0, le=MAX_ITEMS, description="Use only the first N train questions."
    )
    test_size: int | None = Field(
        None, gt=0, le=MAX_ITEMS, description="Use only the first N test questions."
    )
    arith: ArithParams = Field(default_factory=ArithParams, description="Difficulty (arith only).")
    skip_invalid: bool = Field(
        False,
        description="Skip (and log) items without a readable gold answer instead of stopping "
        "(the paper's AQuA files have a few).",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DATASET_NAMES:
            raise ValueError(f"must be one of {', '.join(DATASET_NAMES)}")
        return v

    def split_fingerprint(self, split: str) -> dict[str, Any]:
        """Everything that determines the questions of `split` (file contents hashed)."""
        path = self.train_file if split == "train" else self.test_file
        size = self.train_size if split == "train" else self.test_size
        fp: dict[str, Any] = {"name": self.name, "split": split, "size": size}
        if path:
            fp["file_sha256"] = file_sha256(path)
        if DATASETS[self.name].generated:
            fp["arith"] = self.arith.model_dump()
        if self.skip_invalid:  # only when set, so that the keys of other grids stay as they were
            fp["skip_invalid"] = True
        return fp


class TeacherSpec(_Spec):
    """A teacher: a server (tgi/openai), recorded files, the dataset's own rationales, or code."""

    name: Name = Field(description="Label used in results and reports (see NAME_PATTERN).")
    kind: TeacherKind = Field(
        description=f"{', '.join(list(TEACHER_KINDS)[:-1])} or {list(TEACHER_KINDS)[-1]}."
    )
    model: str | None = Field(
        None, description="Teacher model id (tgi/openai); its tokenizer gives the chat template."
    )
    revision: str | None = Field(None, description="Model revision, part of the CoT set key.")
    base_url: str | None = Field(
        None, description="Server URL (tgi: TGI root or .../generate; openai: .../v1)."
    )
    route: Literal["generate", "chat"] = Field(
        "chat", description="tgi: /generate with the chat template, or /v1/chat/completions."
    )
    api_key_env: str | None = Field(
        None,
        pattern=f"^{ENV_NAME_PATTERN}$",
        description="Name of the environment variable holding the API key; it must be on the worker's "
        "COTD_API_KEY_ENV_ALLOW list (default *_API_KEY, HF_TOKEN) and is never a COTD_* variable.",
    )
    files: str | dict[str, str] | None = Field(
        None,
        description="recorded: a path template with {level} and {format}, e.g. data/SVAMP_level{level}.json, "
        "or a mapping format -> template (the paper keeps each format in its own files); human: one file "
        "of the dataset's own rationales (default: those of the train file).",
    )
    levels: list[int] | None = Field(
        None,
        description="Levels for this teacher instead of the grid's (the paper has some teachers at fewer).",
    )
    formats: list[Format] | None = Field(None, description="Formats for this teacher instead of the grid's.")
    concurrency: int = Field(8, gt=0, le=1024, description="Max requests in flight (adapts down on 429/503).")
    max_new_tokens: int = Field(512, gt=0, le=MAX_TOKENS, description="Generation budget per rationale.")
    temperature: float = Field(0.0, ge=0, le=5, description="Sampling temperature (0 = greedy).")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling.")
    frequency_penalty: float | None = Field(
        None,
        ge=-2,
        le=2,
        description="Subtracted from a token's logit per earlier occurrence (OpenAI and TGI; None: the "
        "server's default, no penalty). Small teachers loop under greedy decoding; 0.3-0.5 breaks the loops.",
    )
    timeout_s: float = Field(120.0, gt=0, le=86400, description="Per-request timeout (at most a day).")
    max_retries: int = Field(6, ge=0, le=100, description="Retries per item before it is recorded as failed.")
    filter: Literal["keep-all", "keep-correct"] = Field(
        "keep-all", description="Keep every item, or only correct ones."
    )

    @field_validator("api_key_env")
    @classmethod
    def _not_cotd(cls, v: str | None) -> str | None:
        if v and v.upper().startswith("COTD_"):
            raise ValueError(f"{v} is a cotd setting; a teacher's API key never comes from a COTD_* variable")
        return v

    @property
    def uses_levels(self) -> bool:
        """Whether this teacher writes at granularity levels (answer-only and human do not)."""
        return TEACHER_KINDS[self.kind].uses_levels

    def identity(self, level: int | None, fmt: str | None) -> dict[str, Any]:
        """The fields that determine what this teacher writes (not its name, URL or rate limits)."""
        ident: dict[str, Any] = {"kind": self.kind, "filter": self.filter}
        if TEACHER_KINDS[self.kind].server:
            ident |= {
                "model": self.model,
                "revision": self.revision,
                "route": self.route,
                "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature,
                "top_p": self.top_p,
            }
            if self.frequency_penalty is not None:  # only when set: the keys of existing sets stay
                ident["frequency_penalty"] = self.frequency_penalty
        if self.kind in FILE_KINDS and self.files:
            path = recorded_path(self.files, level, fmt)
            ident["file_sha256"] = file_sha256(path) if Path(path).exists() else path
        return ident


def recorded_path(files: str | dict[str, str], level: int | None, fmt: str | None) -> str:
    """The recorded teacher's file for one level and format."""
    fmt = fmt or "cot"
    if isinstance(files, dict):
        if fmt not in files:
            raise ValueError(
                f"the recorded teacher has no files for format {fmt!r} (it has {', '.join(files)})"
            )
        files = files[fmt]
    return files.format(level=level, format=fmt)


class StudentSpec(_Spec):
    """A student model and how it is fine-tuned."""

    name: Name = Field(description="Label used in results and reports (see NAME_PATTERN).")
    model: str = Field(
        description="Hub id, local path, a .gguf file (converted once into the store, keyed by its sha256), "
        "or tiny:<size> (built offline by `cotd model init-tiny`)."
    )
    revision: str | None = Field(None, description="Hub revision.")
    template: Template = Field("auto", description="Prompt template; auto = the tokenizer's chat template.")
    method: Method | None = Field(None, description="Overrides training.method for this student.")
    trust_remote_code: bool = Field(
        False, description="Allow the model's own code from the hub (off by default)."
    )
    training: TrainingOverrides = Field(
        default_factory=TrainingOverrides, description="Per-student overrides of `training:`."
    )

    def identity(self) -> dict[str, Any]:
        """The fields that determine the trained student (not its label; a GGUF file by its sha256)."""
        ident = self.model_dump(exclude={"name", "training", "method"})
        path = Path(self.model).expanduser()
        if self.model.endswith(".gguf") and path.is_file():
            st = path.stat()
            ident["model"] = {"gguf_sha256": _cached_sha256(str(path.resolve()), st.st_mtime_ns, st.st_size)}
        return ident


@lru_cache(maxsize=64)
def _cached_sha256(path: str, mtime_ns: int, size: int) -> str:
    """A model file's sha256, once per process and file version (every cell names the same file)."""
    return file_sha256(path)


class CotSetSpec(_Spec):
    """One CoT set: teacher x level x format over a dataset's train split."""

    dataset: DatasetRef
    teacher: TeacherSpec
    level: int | None = Field(None, ge=1, le=6)
    format: Format | None = None
    prompt_version: str

    @cached_property
    def key(self) -> str:
        """Content key of the CoT set."""
        return content_key(
            "cotset",
            {
                "data": self.dataset.split_fingerprint("train"),
                "teacher": self.teacher.identity(self.level, self.format),
                "level": self.level,
                "format": self.format,
                "prompt_version": self.prompt_version,
            },
        )


class CheckpointSpec(_Spec):
    """One fine-tuned student: a CoT set, a student, training settings and a seed."""

    cot: CotSetSpec
    student: StudentSpec
    training: TrainingConfig
    seed: Seed

    @cached_property
    def key(self) -> str:
        """Content key of the checkpoint."""
        return content_key(
            "checkpoint",
            {
                "cot": self.cot.key,
                "student": self.student.identity(),
                "training": self.training.identity(),
                "seed": self.seed,
            },
        )


class EvalSpec(_Spec):
    """One evaluation: a checkpoint scored on a test split with decoding settings."""

    checkpoint: CheckpointSpec
    dataset: DatasetRef
    evaluation: EvaluationConfig

    @cached_property
    def key(self) -> str:
        """Content key of the evaluation."""
        return content_key(
            "eval",
            {
                "checkpoint": self.checkpoint.key,
                "data": self.dataset.split_fingerprint("test"),
                "evaluation": self.evaluation.model_dump(),
            },
        )
