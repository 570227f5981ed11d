"""A test plugin adding a command: `kpisheet kpi-groups` counts the KPIs of each group."""

from __future__ import annotations

from pathlib import Path

import click

import kpisheet
from kpisheet.cli import definitions_arg, definitions_option


@kpisheet.hookimpl
def kpisheet_cli_commands(cli: click.Group) -> None:
    """Add `kpisheet kpi-groups` (a new command object each call, so fresh groups stay apart)."""

    @cli.command("kpi-groups")
    @definitions_option()
    def kpi_groups(definitions: tuple[Path, ...]) -> None:
        """Count the KPIs of each group, in the order of the sheet."""
        registry = kpisheet.load_kpis(definitions_arg(definitions))
        for group in registry.groups:
            click.echo(f"{group}: {len(registry.in_group(group))}")
