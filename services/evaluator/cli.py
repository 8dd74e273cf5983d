"""`cotd evaluate`: score a checkpoint, or score existing generations without a model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from services.evaluator.errors import EvaluationError
from shared.config import EvaluationConfig
from shared.model_options import model_options


@click.command("evaluate")
@click.option(
    "--model", "model_dir", type=click.Path(exists=True, file_okay=False), help="Checkpoint folder."
)
@click.option(
    "--predictions",
    type=click.Path(exists=True, dir_okay=False),
    help="Score this JSON/JSONL of outputs instead.",
)
@click.option(
    "--dataset",
    required=True,
    help="Dataset name (svamp, gsm8k, aqua, math, csqa, openbookqa, strategyqa, arith).",
)
@click.option(
    "--data-file", type=click.Path(exists=True, dir_okay=False), help="Local test file (default: the hub)."
)
@click.option(
    "--gold",
    "gold_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Gold file (with --predictions).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--template",
    default=None,
    help="Prompt template (llama3, gemma, alpaca, chatml, or tokenizer = the saved chat template); "
    "default and auto: the one the checkpoint records (cotd_checkpoint.json), else auto's rule.",
)
@model_options(
    EvaluationConfig, ["batch_size", "max_new_tokens", "num_beams", "stop", "sort_by_length", "backend"], sort_by_length="--sort"
)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Only the first N test items.")
@click.option("--question-field", default=None, help="With --predictions: the question field.")
@click.option(
    "--output-field",
    "output_fields",
    multiple=True,
    help="With --predictions: the output field; repeat it or separate names by commas, the first "
    "present in an item wins (items with none count as wrong).",
)
@click.option("--gold-field", default=None, help="With --predictions: the gold field.")
@click.option("--device", default="auto", show_default=True)
def evaluate(
    model_dir: str | None,
    predictions: str | None,
    dataset: str,
    data_file: str | None,
    gold_file: str | None,
    out: Path,
    template: str | None,
    batch_size: int,
    max_new_tokens: int,
    num_beams: int,
    stop: tuple[str, ...],
    sort_by_length: bool,
    backend: str,
    limit: int | None,
    question_field: str | None,
    output_fields: tuple[str, ...],
    gold_field: str | None,
    device: str,
) -> None:
    """Write predictions.jsonl and metrics.json (accuracy, 95% CI, n, extraction failures, tokens).

    metrics.json has both `accuracy` (our flexible extraction) and `accuracy_strict` (the paper's:
    its regex for commonsense sets, MAmmoTH's answer_clean for math); unparsed answers count as wrong.

    A malformed dataset item stops the command with one line naming the file and the line or
    index; the partial predictions of an interrupted evaluation in --out are kept.
    """
    if bool(model_dir) == bool(predictions):
        raise click.UsageError("give exactly one of --model or --predictions")
    if predictions:
        from services.evaluator.predictions import score_predictions

        names = [n.strip() for f in output_fields for n in f.split(",") if n.strip()]
        metrics = score_predictions(
            predictions, dataset, gold_file or predictions, out, question_field, names or None, gold_field
        )
    else:
        from services.evaluator.evaluate import evaluate_model
        from shared.datasets.registry import load_questions

        questions = load_questions(dataset, "test", data_file=data_file, limit=limit)
        if not questions:
            raise EvaluationError(f"{dataset}: the test set is empty")
        cfg = EvaluationConfig(
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            stop=list(stop),
            sort_by_length=sort_by_length,
            backend=backend,
        )
        metrics = evaluate_model(model_dir, questions, out, cfg, template=template, device_setting=device)
    click.echo(json.dumps(metrics))
