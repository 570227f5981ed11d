"""The ``kpisheet`` command line: one click group, a command per job."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from kpisheet.constants import Window
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


def sheet_options(function: Any) -> Any:
    """``--data``, ``--definitions``, ``--entities`` and ``--release``: what a sheet is opened from."""
    function = click.option(
        "--release", type=int, default=None, help="Store release id to read. Default: the newest."
    )(function)
    function = click.option(
        "--entities",
        type=click.Path(path_type=Path),
        default=None,
        help="Entity hierarchy YAML. Default: the demo hierarchy.",
    )(function)
    function = definitions_option(function)
    return click.option(
        "--data",
        default=None,
        help="Observations: a CSV or Parquet file, or a store URL (sqlite:///kpisheet.db). Default: the demo sheet.",
    )(function)


def open_sheet(
    data: str | None, definitions: Sequence[Path], entities: Path | None, release: int | None
) -> Any:
    """Open the sheet the common options describe (the demo sheet where nothing is given)."""
    from kpisheet.sheet import open as open_kpisheet

    return open_kpisheet(
        data, definitions=definitions_arg(definitions), entities=entities, release=release
    )


@click.group(cls=KpisheetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kpisheet")
def main() -> None:
    """kpisheet: monthly KPI sheets with KPIs declared in YAML."""


@main.command()
@definitions_option
@click.option(
    "--entities",
    type=click.Path(path_type=Path),
    default=None,
    help="Entity hierarchy YAML to check.",
)
@click.option(
    "--data", default=None, help="Observations (CSV, Parquet or store URL) to check against both."
)
def validate(definitions: tuple[Path, ...], entities: Path | None, data: str | None) -> None:
    """Check KPI definitions (and an entity hierarchy and data, if given).

    Exit 0 when all is valid; else list every problem and exit 1.
    """
    from kpisheet.errors import ProblemsError
    from kpisheet.hierarchy import load_hierarchy

    problems: list[str] = []
    registry = hierarchy = None
    try:
        registry = load_kpis(definitions_arg(definitions))
        click.echo(f"OK: {len(registry)} KPIs in {len(registry.groups)} groups.")
    except ProblemsError as exc:
        problems.append(exc.report())
    if entities is not None or data is not None:
        try:
            from kpisheet.demo import DEMO_ENTITIES

            hierarchy = load_hierarchy(entities if entities is not None else DEMO_ENTITIES)
            click.echo(f"OK: {len(hierarchy.leaves)} products in the entity hierarchy.")
        except ProblemsError as exc:
            problems.append(exc.report())
    if data is not None:
        if registry is None or hierarchy is None:
            problems.append(
                f"data {data} not checked: fix the definitions and the entity hierarchy first."
            )
        else:
            sheet = open_sheet(data, definitions, entities, None)
            click.echo(
                f"OK: {len(sheet.observations)} observations, months {sheet.months[0]} to {sheet.months[-1]}."
            )
    if problems:
        raise UserError("\n".join(problems))


@main.command()
@sheet_options
@click.option(
    "--as-of",
    "as_of",
    default=None,
    help="Last month of the window, YYYY-MM. Default: the newest month.",
)
@click.option(
    "--window",
    type=click.Choice([w.value for w in Window], case_sensitive=False),
    default=Window.M1.value,
    show_default=True,
    help="Time window ending at the as-of month.",
)
@click.option("--kpi", "kpi_ids", multiple=True, help="KPI id (repeatable). Default: all KPIs.")
@click.option(
    "--entity", "entity_names", multiple=True, help="Entity name, product or group (repeatable)."
)
@click.option(
    "--level",
    "level_names",
    multiple=True,
    help="Level: product, a hierarchy level, total or a view (repeatable).",
)
@click.option(
    "--per-account",
    is_flag=True,
    help="Divide by the mean number of active accounts of the window.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["csv", "json", "xlsx"]),
    default="csv",
    show_default=True,
    help="Output format; xlsx needs --output.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Write to this file instead of stdout.",
)
def query(
    data: str | None,
    definitions: tuple[Path, ...],
    entities: Path | None,
    release: int | None,
    as_of: str | None,
    window: str,
    kpi_ids: tuple[str, ...],
    entity_names: tuple[str, ...],
    level_names: tuple[str, ...],
    per_account: bool,
    output_format: str,
    output: Path | None,
) -> None:
    """Print the KPI table of one window with the previous-year comparison (as sheet.query)."""
    sheet = open_sheet(data, definitions, entities, release)
    result = sheet.query(
        as_of=as_of,
        window=window,
        kpis=list(kpi_ids) or None,
        entities=list(entity_names) or None,
        levels=list(level_names) or None,
        per_account=per_account,
    )
    if output_format == "xlsx":
        if output is None:
            raise UserError("--format xlsx writes a file; give it with --output FILE.xlsx")
        selection = {
            "as_of": result["as_of"].iloc[0] if len(result) else as_of,
            "window": window.upper(),
            "kpis": list(kpi_ids),
            "entities": list(entity_names),
            "levels": list(level_names),
            "per_account": per_account,
        }
        sheet.to_excel(result, output, selection=selection)
        click.echo(f"Wrote {len(result)} rows to {output}", err=True)
        return
    if output_format == "json":
        text = result.to_json(orient="records", force_ascii=False, indent=1)
    else:
        text = result.to_csv(index=False)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"Wrote {len(result)} rows to {output}", err=True)


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
