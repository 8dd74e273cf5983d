"""`cotd train`, `cotd model init-tiny` and `cotd model import-gguf`.

The training options are generated from `TrainingConfig`, so `cotd train --help` shows the same
help text and defaults (the paper's) as the grid's `training:` block.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from shared.config import TrainingConfig
from shared.model_options import field_option
from shared.templates import TEMPLATES


def _option(name: str) -> Callable:
    """A click option for one TrainingConfig field (choices for Literals, flags for bools)."""
    if name == "lora_target_modules":
        field = TrainingConfig.model_fields[name]
        return click.option(
            "--lora-target-modules",
            name,
            default=field.default,
            show_default=True,
            help=f"{field.description} Comma-separated names, or all-linear.",
        )
    return field_option(TrainingConfig, name, ranged=False)


def training_options(func: Callable) -> Callable:
    """Decorate a command with one option per TrainingConfig field."""
    for name in reversed(list(TrainingConfig.model_fields)):
        func = _option(name)(func)
    return func


def resolve_cot(cot: str) -> Path:
    """A CoT file/folder path, or the folder of a CoT set key in the artifact store (COTD_STORE_DIR)."""
    p = Path(cot).expanduser()
    if p.exists():
        return p
    from shared.s3_store import open_store

    store = open_store()
    try:
        if store.exists("cotsets", cot):
            return store.fetch("cotsets", cot)
    except ValueError:
        pass
    where = getattr(store, "root", "the artifact store")
    raise click.BadParameter(f"{cot!r} is neither a file nor a CoT set key in {where}", param_hint="--cot")


@click.command("train")
@click.option("--student", required=True, help="Hub id or local path of the student.")
@click.option(
    "--cot",
    "cot",
    required=True,
    help="CoT set: a folder, cot.jsonl, an alpaca JSON/JSONL file, or a CoT set key in the artifact store.",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Checkpoint folder."
)
@click.option(
    "--template",
    type=click.Choice(["auto", *TEMPLATES]),
    default="auto",
    show_default=True,
    help="Prompt template; auto = the tokenizer's chat template, else alpaca.",
)
@click.option(
    "--seed", type=int, default=100, show_default=True, help="Seed for init, data order and dropout."
)
@click.option("--revision", default=None, help="Hub revision of the student.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the student's custom modelling code.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Resumable state (default: .OUT.work beside OUT); rerun the same command to resume.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@training_options
def train(
    student: str,
    cot: str,
    out: Path,
    template: str,
    seed: int,
    revision: str | None,
    trust_remote_code: bool,
    workdir: Path | None,
    device: str,
    **kw,
) -> None:
    """Fine-tune one student on one CoT set (paper defaults: full, lr 5e-5, 3 epochs, batch 64, cosine)."""
    from services.trainer.loop import TrainingError
    from services.trainer.recipe import train_sft
    from shared.cotset import read_training_pairs

    targets = kw.get("lora_target_modules")
    if isinstance(targets, str) and targets != "all-linear":
        kw["lora_target_modules"] = [t.strip() for t in targets.split(",") if t.strip()]
    cfg = TrainingConfig(**{k: v for k, v in kw.items() if v is not None})
    try:
        pairs = read_training_pairs(resolve_cot(cot))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--cot") from None
    work = workdir or out.parent / f".{out.name}.work"
    try:
        summary = train_sft(
            student,
            pairs,
            out,
            work,
            cfg,
            seed,
            template=template,
            revision=revision,
            trust_remote_code=trust_remote_code,
            device_setting=device,
        )
    except TrainingError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "losses"}))


@click.group("model")
def model() -> None:
    """Student models."""


@model.command("init-tiny")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--corpus", multiple=True, help="Dataset or CoT files for the tokenizer (default: the arith text)."
)
@click.option("--size", type=click.Choice(["xs", "s", "m", "l"]), default="s", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def init_tiny_cmd(out: Path, corpus: tuple[str, ...], size: str, seed: int) -> None:
    """Build a tiny student offline: a BPE tokenizer trained on the corpus plus a small Llama."""
    from services.trainer.tiny import init_tiny

    path = init_tiny(out, corpus=list(corpus) or None, size=size, seed=seed)
    click.echo(str(path))


@model.command("import-gguf")
@click.argument("gguf_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--dtype",
    type=click.Choice(["bf16", "fp32"]),
    default="fp32",
    show_default=True,
    help="Dtype of the saved weights (the GGUF tensors are dequantised first).",
)
def import_gguf_cmd(gguf_file: Path, out: Path, dtype: str) -> None:
    """Convert a GGUF file (llama.cpp, Ollama, LM Studio) into a safetensors checkpoint with its tokenizer."""
    from services.trainer.gguf_import import import_gguf

    info = import_gguf(gguf_file, out, dtype=dtype)
    click.echo(json.dumps(info))
