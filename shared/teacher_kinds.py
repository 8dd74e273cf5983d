"""The teacher kinds, declared once: what each kind needs and which function writes its rationales.

Adding a kind is one entry in `TEACHER_KINDS` plus its writer: a function
``(spec, questions, workdir, check) -> list[CotRecord]`` named by its "module:function" path
(the library names it as text and never imports the services).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from shared.specs import CotSetSpec, TeacherSpec

PROMPT_VERSION = "p4"
"""Version of the server teachers' prompts (services/generator/prompts.py); bump it when they change."""
PROCEDURAL_VERSION = "arith-procedural-v1"
"""Version of the procedural teacher's rationales (services/generator/teachers/procedural.py)."""


@dataclass(frozen=True)
class KindTraits:
    """What a teacher kind needs and writes."""

    writer: str
    """The "module:function" that writes its rationales."""
    prompt_version: str
    """Version of whatever turns questions into rationales (part of the CoT set key)."""
    uses_levels: bool = True
    """Writes at granularity levels and formats (answer-only and human do not)."""
    server: bool = False
    """Calls a teacher server (needs `model`, and a level)."""
    files: Literal["none", "one", "required"] = "none"
    """Reads no files, optionally one file, or requires a path template (or format mapping)."""
    datasets: tuple[str, ...] | None = None
    """The datasets it can write (None: every dataset)."""


_OFFLINE = "services.generator.teachers.offline"
_REMOTE = "services.generator.teachers.remote:remote_records"

TEACHER_KINDS: dict[str, KindTraits] = {
    "procedural": KindTraits(f"{_OFFLINE}:procedural_records", PROCEDURAL_VERSION, datasets=("arith",)),
    "answer-only": KindTraits(f"{_OFFLINE}:answer_only_records", "answer-only", uses_levels=False),
    "human": KindTraits(f"{_OFFLINE}:human_records", "human", uses_levels=False, files="one"),
    "recorded": KindTraits(f"{_OFFLINE}:recorded_records", "recorded", files="required"),
    "tgi": KindTraits(_REMOTE, PROMPT_VERSION, server=True),
    "openai": KindTraits(_REMOTE, PROMPT_VERSION, server=True),
}
SERVER_KINDS: tuple[str, ...] = tuple(k for k, t in TEACHER_KINDS.items() if t.server)
FILE_KINDS: tuple[str, ...] = tuple(
    sorted(
        (k for k, t in TEACHER_KINDS.items() if t.files != "none"),
        key=lambda k: TEACHER_KINDS[k].files != "required",
    )
)
"""Kinds that read files, those that require them first."""


def _writes_problems(t: TeacherSpec, datasets: Iterable[str]) -> list[tuple[str, str]]:
    """The problems that stop a kind's writer: missing files, a dataset it cannot write."""
    traits = TEACHER_KINDS[t.kind]
    out: list[tuple[str, str]] = []
    if traits.files == "required" and not t.files:
        out.append(("files", f"required for a {t.kind} teacher"))
    if traits.datasets is not None and any(d not in traits.datasets for d in datasets):
        out.append(("kind", f"{t.kind} writes only the {', '.join(traits.datasets)} dataset"))
    return out


def teacher_problems(t: TeacherSpec, datasets: Iterable[str]) -> list[tuple[str, str]]:
    """What is wrong with teacher `t` in a grid over `datasets`, as (field, message) pairs; empty when valid."""
    traits = TEACHER_KINDS[t.kind]
    out = _writes_problems(t, datasets)
    if traits.server and not t.model:
        out.append(("model", f"required for a {t.kind} teacher"))
    if traits.files == "one" and t.files is not None and not isinstance(t.files, str):
        out.append(("files", f"a {t.kind} teacher takes one file, not a mapping"))
    if traits.files == "none" and t.files is not None:
        out.append(("files", f"only {' and '.join(FILE_KINDS)} teachers read files"))
    if not traits.uses_levels and (t.levels or t.formats):
        out.append(("levels", f"a {t.kind} teacher writes no levels or formats"))
    return out


def cotset_problem(spec: CotSetSpec) -> str | None:
    """Why `spec`'s teacher cannot write it (one line naming the teacher), or None."""
    t = spec.teacher
    if problems := _writes_problems(t, [spec.dataset.name]):
        return f"teacher {t.name}: {problems[0][0]}: {problems[0][1]}"
    if TEACHER_KINDS[t.kind].server and spec.level is None:
        return f"teacher {t.name}: kind {t.kind} needs a level (--level 1..6)"
    return None
