"""`cotd generate`, `cotd data ...` and `cotd teacher ...`."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import click

from shared.config import Format
from shared.model_options import model_options
from shared.specs import TeacherSpec
from shared.teacher_kinds import TEACHER_KINDS

TEACHER_FIELDS = (
    "model", "revision", "base_url", "route", "api_key_env", "files", "concurrency", "max_new_tokens",
    "temperature", "timeout_s", "max_retries", "filter",
)  # fmt: skip
"""The TeacherSpec fields `cotd generate` takes as options (defaults, choices and help from the model)."""


@click.command("generate")
@click.option("--teacher", "teacher_kind", required=True, type=click.Choice(list(TEACHER_KINDS)))
@click.option("--dataset", required=True)
@click.option("--train-file", default=None, help="Local train questions (default: the hub, or arith).")
@click.option("--level", type=click.IntRange(1, 6), default=None)
@click.option("--format", "fmt", type=click.Choice(list(typing.get_args(Format))), default="cot")
@click.option("--limit", type=int, default=None, help="Only the first N train questions.")
@click.option("--name", default=None, help="Teacher label (default: the model, or the kind).")
@model_options(TeacherSpec, TEACHER_FIELDS, timeout_s="--timeout")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (cot.jsonl + manifest.json).")
def generate(
    teacher_kind: str, dataset: str, train_file: str | None, level: int | None, fmt: str, limit: int | None,
    name: str | None, out: Path, **fields: Any,
) -> None:
    """Write one CoT set (teacher x level x format); a rerun resumes a server teacher's work."""
    from services.generator.build import MANIFEST_FILE, build_cotset
    from shared.grid import prompt_version
    from shared.specs import CotSetSpec, DatasetRef
    from shared.teacher_kinds import cotset_problem

    teacher = TeacherSpec(name=name or fields["model"] or teacher_kind, kind=teacher_kind, **fields)
    spec = CotSetSpec(
        dataset=DatasetRef(name=dataset, train_file=train_file, train_size=limit),
        teacher=teacher,
        level=level if teacher.uses_levels else None,
        format=fmt if teacher.uses_levels else None,
        prompt_version=prompt_version(teacher_kind),
    )
    if problem := cotset_problem(spec):
        raise click.UsageError(problem)
    out.mkdir(parents=True, exist_ok=True)
    manifest = build_cotset(spec, out, out) | {"key": spec.key}
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    click.echo(json.dumps(manifest["stats"]))


@click.group("data")
def data() -> None:
    """Dataset and CoT set utilities."""


@data.command("stats")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--dataset", required=True, help="Dataset name (sets the answer type).")
@click.option("--gold", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Any file of the dataset with gold answers (e.g. the paper's *_only_ans.json).")
@click.option("--tokenizer", default=None, help="Tokenizer path or id for token counts.")
@click.option("--column", default=None, help="The rationale field, when not output / <teacher>_output.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats_cmd(file: Path, dataset: str, gold: Path | None, tokenizer: str | None, column: str | None, as_json: bool) -> None:
    """Statistics of a CoT file: parse rate, teacher accuracy (with --gold), length, steps, diversity."""
    from services.generator.stats import file_stats

    s = file_stats(file, dataset, gold, tokenizer, column)
    if as_json:
        click.echo(json.dumps(s))
        return
    for k, v in s.items():
        click.echo(f"{k}: {v}")


@data.command("import-paper")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--no-grade", is_flag=True, help="Do not grade against the answer-only files.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def import_paper_cmd(folder: Path, out: Path, no_grade: bool, as_json: bool) -> None:
    """The paper's released files as `recorded` CoT sets (one folder each) under OUT."""
    from services.generator.paper import import_paper

    summary = import_paper(folder, out, grade=not no_grade)
    if as_json:
        click.echo(json.dumps(summary))
        return
    for it in summary["imported"]:
        lvl = it["level"] if it["level"] is not None else "-"
        click.echo(f"imported {it['file']} -> {it['dir']} ({it['dataset']}, {it['teacher']}, level {lvl}, "
                   f"{it['format'] or '-'}, {it['items']} items)")
    if summary["unclassified"]:
        click.echo(f"unclassified: {', '.join(summary['unclassified'])}")
    click.echo(f"{len(summary['imported'])} CoT sets written to {out}")


@data.command("export-llamafactory")
@click.argument("cotsets", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--all", "include_all", is_flag=True, help="Also export items the filter left out.")
def export_llamafactory_cmd(cotsets: tuple[Path, ...], out: Path, include_all: bool) -> None:
    """CoT sets as alpaca files plus LLaMA-Factory's dataset_info.json."""
    from services.generator.export import export_llamafactory

    info = export_llamafactory(list(cotsets), out, include_all)
    for name, entry in info.items():
        click.echo(f"{name}: {out / entry['file_name']}")


@click.group("teacher")
def teacher() -> None:
    """Teacher servers."""


@teacher.command("serve")
@click.option("--model", required=True, help="Local model folder (or hub id) of a causal LM.")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--max-batch", type=int, default=16, show_default=True, help="Requests per batched generate.")
@click.option("--batch-wait-ms", type=float, default=5.0, show_default=True, help="How long a batch collects requests.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--max-input-tokens", type=int, default=None,
              help="Longest prompt (default: max total - 1); longer ones get 422 unless they ask to `truncate`.")
@click.option("--max-total-tokens", type=int, default=None,
              help="Prompt + new tokens (default and most: the model's max_position_embeddings).")
@click.option("--max-concurrent-requests", type=int, default=128, show_default=True,
              help="Requests in flight before answering 429.")
def serve_cmd(model: str, port: int, host: str, max_batch: int, batch_wait_ms: float, threads: int | None,
              max_input_tokens: int | None, max_total_tokens: int | None, max_concurrent_requests: int) -> None:
    """A TGI-protocol server (/generate, /generate_stream, /, /info, /health, /metrics) with OpenAI routes (/v1/...)."""
    from pydantic import ValidationError

    from services.generator.server import ServeConfig, exit_now, serve

    try:
        cfg = ServeConfig(model=model, host=host, port=port, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                          threads=threads, max_input_tokens=max_input_tokens, max_total_tokens=max_total_tokens,
                          max_concurrent_requests=max_concurrent_requests)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise click.UsageError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    try:
        serve(cfg)
    except ValueError as exc:  # limits beyond the model's
        raise click.UsageError(str(exc)) from None
    exit_now(0)  # stopped cleanly: skip torch's slow interpreter teardown, so SIGTERM ends it within seconds
