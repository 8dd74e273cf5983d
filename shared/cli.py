"""The `cotd` command line: one group, with each area's commands defined beside its code."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from shared.errors import CotdError

# CotdError covers bad grids, datasets, checkpoints and settings, teacher and training failures;
# ValueError and FileNotFoundError cover what libraries raise for a bad argument or a missing file.
USER_ERRORS: tuple[type[BaseException], ...] = (CotdError, ValueError, FileNotFoundError)


class CotdGroup(click.Group):
    """A click group that turns user errors (bad grid, dataset, checkpoint...) into one line and exit 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            raise click.ClickException(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None


@click.group(cls=CotdGroup)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """cotd: chain-of-thought distillation experiments (teachers -> CoT sets -> students -> scores)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # also silences transformers' load/save bars
    for noisy in ("httpx", "urllib3", "transformers", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@cli.command("run")
@click.argument("grid_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Output folder (default: runs/<grid name>).")
@click.option("--jobs", type=int, default=None, help="Stages run in parallel processes (default: 2 on CPU, 1 on GPU).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
def run_cmd(grid_file: Path, out: Path | None, jobs: int | None, device: str) -> None:
    """Run a whole grid in-process (embedded mode): generate, train, evaluate, report."""
    from shared.embedded import run_grid
    from shared.grid import load_grid

    grid = load_grid(grid_file)
    run_grid(grid, out or Path("runs") / grid.name, echo=click.echo, device=device, jobs=jobs)


def _register() -> None:
    from services.evaluator.cli import evaluate
    from services.generator.cli import data, generate, teacher
    from services.trainer.cli import model, train
    from shared.report.cli import report

    for cmd in (generate, data, teacher, train, model, evaluate, report):
        cli.add_command(cmd)
    try:
        from shared.orchestration.cli import grid, worker
    except ImportError:  # the distributed mode is optional at import time
        return
    cli.add_command(grid)
    cli.add_command(worker)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="cotd")
