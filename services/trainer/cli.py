"""`cotd train` and `cotd model init-tiny`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from shared.config import TrainingConfig


@click.command("train")
@click.option("--student", required=True, help="Hub id or local path of the student.")
@click.option("--cot", "cot", required=True, help="CoT set: a folder, cot.jsonl, or an alpaca JSON/JSONL file.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Checkpoint folder.")
@click.option("--method", type=click.Choice(["full", "lora", "qlora"]), default="full", show_default=True)
@click.option("--template", type=click.Choice(["auto", "llama3", "gemma", "alpaca", "chatml"]), default="auto", show_default=True)
@click.option("--epochs", type=float, default=3.0, show_default=True)
@click.option("--max-steps", type=int, default=None, help="Optimizer steps (overrides --epochs).")
@click.option("--lr", type=float, default=5e-5, show_default=True)
@click.option("--warmup-steps", type=int, default=0, show_default=True)
@click.option("--global-batch-size", type=int, default=64, show_default=True)
@click.option("--micro-batch-size", type=int, default=8, show_default=True)
@click.option("--cutoff", type=int, default=4096, show_default=True)
@click.option("--seed", type=int, default=100, show_default=True)
@click.option("--from-scratch", is_flag=True, help="Random init (tiny students).")
@click.option("--device", default="auto", show_default=True)
def train(student: str, cot: str, out: Path, method: str, template: str, device: str, seed: int, **kw) -> None:
    """Fine-tune one student on one CoT set (paper defaults: full, lr 5e-5, 3 epochs, batch 64, cosine)."""
    from services.trainer.recipe import train_sft
    from shared.cotset import read_training_pairs

    cfg = TrainingConfig(method=method, **{k: v for k, v in kw.items() if v is not None})
    pairs = read_training_pairs(cot)
    summary = train_sft(student, pairs, out, out.parent / f".{out.name}.work", cfg, seed, template=template, device_setting=device)
    click.echo(json.dumps(summary))


@click.group("model")
def model() -> None:
    """Student models."""


@model.command("init-tiny")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--corpus", multiple=True, help="Dataset or CoT files for the tokenizer (default: the arith text).")
@click.option("--size", type=click.Choice(["xs", "s", "m", "l"]), default="s", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def init_tiny_cmd(out: Path, corpus: tuple[str, ...], size: str, seed: int) -> None:
    """Build a tiny student offline: a BPE tokenizer trained on the corpus plus a small Llama."""
    from services.trainer.tiny import init_tiny

    path = init_tiny(out, corpus=list(corpus) or None, size=size, seed=seed)
    click.echo(str(path))
