"""``cotd report DIR_OR_GRID [--out DIR]``: the paper-style report of a run folder or results file."""

from __future__ import annotations

from pathlib import Path

import click

from shared.report.build import REPORT_HTML, REPORT_JSON, REPORT_MD, ReportInputError, report_from_dir


@click.command("report")
@click.argument("dir_or_grid", metavar="DIR_OR_GRID")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default: the folder holding results.json).",
)
def report(dir_or_grid: str, out_dir: Path | None) -> None:
    """Write report.md, report.json, report.html and PNG plots for a run folder, a results.json or a grid id."""
    from shared.orchestration.report import is_grid_id, report_grid

    try:
        if is_grid_id(None, dir_or_grid):  # a distributed grid: results and artifacts from Redis + the store
            result, out_dir = report_grid(dir_or_grid, out_dir)
        else:
            result = report_from_dir(dir_or_grid, out_dir)
    except ReportInputError as exc:
        raise click.ClickException(str(exc)) from exc
    target = (
        out_dir
        if out_dir is not None
        else Path(dir_or_grid)
        if Path(dir_or_grid).is_dir()
        else Path(dir_or_grid).parent
    )
    s = result["summary"]
    click.echo(
        f"report: {s['done']} of {s['cells']} cells done, {s['missing']} missing, "
        f"{len(result['tests'])} paired tests"
    )
    for name in (REPORT_MD, REPORT_JSON, REPORT_HTML, *result["plots"]["written"]):
        click.echo(f"wrote {target / name}")
    for name, reason in result["plots"]["skipped"].items():
        click.echo(f"skipped {name}: {reason}")
