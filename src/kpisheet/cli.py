"""The ``kpisheet`` command line: one click group, a command per job."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from kpisheet.errors import KpisheetError
from kpisheet.plugins import load_kpis

DEFINITIONS_HELP = "KPI definition file or directory (repeatable). Default: the built-in sheet plus installed plugins."


class UserError(click.ClickException):
    """A problem with the user's input: printed without a traceback, exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


class KpisheetGroup(click.Group):
    """A click group that turns kpisheet's errors into a short message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KpisheetError as exc:
            raise UserError(str(exc)) from exc


def definitions_option(function: Any) -> Any:
    """The ``--definitions`` option shared by every command that reads KPIs."""
    return click.option(
        "--definitions",
        "definitions",
        multiple=True,
        type=click.Path(path_type=Path),
        help=DEFINITIONS_HELP,
    )(function)


def definitions_arg(definitions: Sequence[Path]) -> list[Path] | None:
    """``None`` (built-in sheet plus plugins) when no ``--definitions`` was given."""
    return list(definitions) or None


@click.group(cls=KpisheetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kpisheet")
def main() -> None:
    """kpisheet: monthly KPI sheets with KPIs declared in YAML."""


@main.command()
@definitions_option
def validate(definitions: tuple[Path, ...]) -> None:
    """Check KPI definitions; exit 0 when all is valid, else list every problem and exit 1."""
    registry = load_kpis(definitions_arg(definitions))
    click.echo(f"OK: {len(registry)} KPIs in {len(registry.groups)} groups.")


@main.command()
@definitions_option
def kpis(definitions: tuple[Path, ...]) -> None:
    """List every KPI with its group, aggregation and the plugin or file it came from."""
    registry = load_kpis(definitions_arg(definitions))
    header = ("id", "label", "group", "aggregation", "origin")
    rows = [
        (
            kpi.id,
            kpi.label,
            kpi.group,
            f"formula: {kpi.formula}" if kpi.is_derived else str(kpi.time_aggregation),
            str(registry.origin(kpi.id)),
        )
        for kpi in registry
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
