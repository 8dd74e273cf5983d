"""`cotd generate`, `cotd data ...` and `cotd teacher ...`."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("generate")
@click.option("--teacher", "teacher_kind", required=True,
              type=click.Choice(["procedural", "answer-only", "human", "recorded", "tgi", "openai"]))
@click.option("--dataset", required=True)
@click.option("--train-file", default=None, help="Local train questions (default: the hub, or arith).")
@click.option("--level", type=click.IntRange(1, 6), default=None)
@click.option("--format", "fmt", type=click.Choice(["cot", "subquestion", "rar", "symbolic"]), default="cot")
@click.option("--limit", type=int, default=None, help="Only the first N train questions.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (cot.jsonl + manifest.json).")
def generate(teacher_kind: str, dataset: str, train_file: str | None, level: int | None, fmt: str, limit: int | None, out: Path) -> None:
    """Write one CoT set (teacher x level x format)."""
    from services.generator.build import build_cotset
    from shared.grid import prompt_version
    from shared.specs import CotSetSpec, DatasetRef, TeacherSpec

    teacher = TeacherSpec(name=teacher_kind, kind=teacher_kind)
    spec = CotSetSpec(
        dataset=DatasetRef(name=dataset, train_file=train_file, train_size=limit),
        teacher=teacher,
        level=level if teacher.uses_levels else None,
        format=fmt if teacher.uses_levels else None,
        prompt_version=prompt_version(teacher_kind),
    )
    manifest = build_cotset(spec, out, out)
    (out / "manifest.json").write_text(json.dumps(manifest | {"key": spec.key}, indent=2))
    click.echo(json.dumps(manifest["stats"]))


@click.group("data")
def data() -> None:
    """Dataset and CoT set utilities."""


@click.group("teacher")
def teacher() -> None:
    """Teacher servers."""
