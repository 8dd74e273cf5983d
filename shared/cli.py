"""The `cotd` command line: one group, with each area's commands defined beside its code."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from shared.errors import CotdError, first_line
from shared.redact import install_log_redaction, redact

# CotdError covers bad grids, datasets, checkpoints and settings, teacher and training failures;
# ValueError and FileNotFoundError cover what libraries raise for a bad argument or a missing file.
USER_ERRORS: tuple[type[BaseException], ...] = (CotdError, ValueError, FileNotFoundError)
EXIT_UNREACHABLE = 3
"""Exit status when Redis or another server (S3) cannot be reached; see docs/distributed.md."""
UNREACHABLE: dict[str, str] = {
    "redis.exceptions.ConnectionError": "Redis (COTD_REDIS_URL)",
    "redis.exceptions.TimeoutError": "Redis (COTD_REDIS_URL)",
    "kombu.exceptions.OperationalError": "Redis (COTD_REDIS_URL)",
    "urllib3.exceptions.HTTPError": "a server",
    "builtins.ConnectionError": "a server",
}
"""Exception classes (and their subclasses) that mean a service is down or refuses us, by full name."""


def one_line(e: BaseException) -> str:
    """The first line of an error's message (or its type), with URL passwords redacted."""
    return redact(first_line(e))


def unreachable(e: BaseException) -> str | None:
    """Which service `e` failed to reach (from UNREACHABLE), or None for any other error."""
    for cls in type(e).__mro__:
        if (what := UNREACHABLE.get(f"{cls.__module__}.{cls.__qualname__}")) is not None:
            return what
    return None


class CotdGroup(click.Group):
    """A click group that prints user errors (bad grid, dataset, checkpoint...) as one line and exits 1,
    and a service that cannot be reached (Redis, S3) as one line with exit 3; no traceback, no password."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            e.message = redact(e.message)
            raise
        except USER_ERRORS as e:
            raise click.ClickException(one_line(e)) from None
        except Exception as e:
            what = unreachable(e)
            if what is None:
                raise
            click.echo(f"Error: cannot reach {what}: {one_line(e)}", err=True)
            ctx.exit(EXIT_UNREACHABLE)


@click.group(cls=CotdGroup)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """cotd: chain-of-thought distillation experiments (teachers -> CoT sets -> students -> scores)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # also silences transformers' load/save bars
    for noisy in ("httpx", "urllib3", "transformers", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # retries: the final error says it
    install_log_redaction()


@cli.command("run")
@click.argument("grid_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default: runs/<grid name>).",
)
@click.option(
    "--jobs", type=int, default=None, help="Stages run in parallel processes (default: 2 on CPU, 1 on GPU)."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
def run_cmd(grid_file: Path, out: Path | None, jobs: int | None, device: str) -> None:
    """Run a whole grid in-process (embedded mode): generate, train, evaluate, report.

    Exit 0 when every cell is done, 1 when a cell failed (results and report are still written).
    """
    from shared.grid import load_grid
    from shared.orchestration.embedded import run_grid

    grid = load_grid(grid_file)
    results = run_grid(grid, out or Path("runs") / grid.name, echo=click.echo, device=device, jobs=jobs)
    if any(c["status"] == "failed" for c in results["cells"]):
        sys.exit(1)  # like `cotd grid wait`: scripts can tell a run with failed cells


def _register() -> None:
    from services.evaluator.cli import evaluate
    from services.generator.cli import data, generate, teacher
    from services.trainer.cli import model, train
    from shared.orchestration.report_cli import report

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
