"""The ``kpisheet`` command line: one click group, a command per job.

Plugins add commands through the hook ``kpisheet_cli_commands``; the web app's ``serve`` and
``users`` come that way from ``kpisheet_ui``, which this module never imports. The options
several commands share are declared once here (:func:`shared_option`), for plugins too.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kpisheet.constants import Window
from kpisheet.errors import KpisheetError, printable
from kpisheet.plugins import get_plugin_manager, load_kpis

if TYPE_CHECKING:
    import pluggy

#: What plugins adding commands (``kpisheet_cli_commands``) may use.
__all__ = [
    "APP_COMMANDS",
    "APP_PACKAGE",
    "KpisheetGroup",
    "UserError",
    "add_plugin_commands",
    "as_of_option",
    "data_option",
    "definitions_arg",
    "definitions_option",
    "entities_option",
    "entity_names_option",
    "kpis_option",
    "main",
    "open_sheet",
    "output_option",
    "output_path",
    "per_account_option",
    "refuse_memory_store",
    "release_option",
    "shared_option",
    "sheet_options",
    "store_option",
    "table_format_option",
    "window_option",
    "writing",
]

#: A click decorator that adds a parameter to a command.
Decorator = Callable[[Any], Any]

DEFINITIONS_HELP = "KPI definition file or directory (repeatable). Default: the built-in sheet plus installed plugins."
STORE_HELP = "Store: a URL (sqlite:///kpisheet.db) or a SQLite file. Default: the demo store."
AS_OF_HELP = "Last month of the window, YYYY-MM. Default: the newest month."
#: The web app's commands, added by its plugin; named here only to say so when the app is missing.
APP_COMMANDS = ("serve", "users")
#: The package of the web app.
APP_PACKAGE = "kpisheet_ui"


class UserError(click.ClickException):
    """A problem with the user's input: printed without a traceback, exit status 1.

    The message is printed through :func:`~kpisheet.errors.printable`: text from data in it
    cannot send escape sequences to the terminal.
    """

    exit_code = 1

    def format_message(self) -> str:
        return printable(super().format_message())

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


class KpisheetGroup(click.Group):
    """A click group that turns kpisheet's errors into a short message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KpisheetError as exc:
            raise UserError(str(exc)) from exc


class KpisheetCommands(KpisheetGroup):
    """The ``kpisheet`` group: kpisheet's own commands and those plugins add.

    Plugins add theirs (hook ``kpisheet_cli_commands``) when a command that is not kpisheet's
    own is asked for, or all are listed: ``kpisheet query`` does not import the app's commands.
    """

    plugin_commands_added = False

    def add_plugin_commands(self) -> None:
        """Let the installed plugins add their commands, once."""
        if not self.plugin_commands_added:
            self.plugin_commands_added = True
            add_plugin_commands(self, get_plugin_manager())

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            self.add_plugin_commands()
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in APP_COMMANDS:
            raise UserError(
                f"kpisheet {cmd_name} is a command of the web app, package {APP_PACKAGE}, "
                "which is not installed; reinstall kpisheet to get it"
            )
        return command


def add_plugin_commands(group: click.Group, manager: pluggy.PluginManager) -> None:
    """Let every plugin of ``manager`` add its commands to ``group`` (hook ``kpisheet_cli_commands``).

    :raises UserError: when a plugin adds a command under a name taken already.
    """
    owners = dict.fromkeys(group.commands, "kpisheet")
    for impl in manager.hook.kpisheet_cli_commands.get_hookimpls():
        before = dict(group.commands)
        arguments = {"cli": group}
        impl.function(*(arguments[name] for name in impl.argnames))
        taken = sorted(name for name in before if group.commands.get(name) is not before[name])
        if taken:
            group.commands.clear()
            group.commands.update(before)
            raise UserError(
                f"plugin {impl.plugin_name!r} adds a command {taken[0]!r}, which "
                f"{owners[taken[0]]} has already; give the plugin's command another name"
            )
        added = group.commands.keys() - before.keys()
        owners.update(dict.fromkeys(added, f"plugin {impl.plugin_name!r}"))


def output_path(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """An ``--output`` file checked before any work is done: not a directory, in one that exists."""
    if value is None:
        return None
    if value.is_dir():
        raise UserError(f"cannot write {value}: it is a directory; give a file name")
    if not value.parent.is_dir():
        raise UserError(f"cannot write {value}: there is no directory {value.parent}")
    return value


@contextlib.contextmanager
def writing(output: Path) -> Iterator[None]:
    """Turn a failure to write ``--output`` (permissions, a full disk) into a one-line message."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}") from exc


def refuse_memory_store(url: str | None, option: str) -> None:
    """Refuse an in-memory SQLite URL: a release written there would vanish on exit."""
    from kpisheet.store import is_memory_url

    if url is not None and is_memory_url(url):
        raise UserError(
            f"{option} {url} is an in-memory database, gone when kpisheet exits; "
            "give a file, e.g. sqlite:///kpisheet.db"
        )


def shared_option(*param_decls: str, **attrs: Any) -> Callable[..., Decorator]:
    """An option declared once for several commands: calling the result makes the decorator.

    Each command may override attributes where its use differs, most often ``help``::

        @entities_option(help="Entity hierarchy YAML to check.")
    """

    def option(**overrides: Any) -> Decorator:
        return click.option(*param_decls, **{**attrs, **overrides})

    return option


#: ``--definitions``: the KPIs a command reads.
definitions_option = shared_option(
    "--definitions", multiple=True, type=click.Path(path_type=Path), help=DEFINITIONS_HELP
)
#: ``--entities``: an entity hierarchy YAML (each command says what for).
entities_option = shared_option("--entities", type=click.Path(path_type=Path), default=None)
#: ``--data``: observations in a file or a store (each command says what for).
data_option = shared_option("--data", default=None)
#: ``--store``: a store by URL or SQLite file.
store_option = shared_option("--store", "store_url", default=None, help=STORE_HELP)
#: ``--release``: a release of a store (each command says which).
release_option = shared_option("--release", type=int, default=None)
#: ``--as-of``: the last month shown.
as_of_option = shared_option("--as-of", "as_of", default=None, help=AS_OF_HELP)
#: ``--window``: the time window ending at the as-of month.
window_option = shared_option(
    "--window",
    type=click.Choice([w.value for w in Window], case_sensitive=False),
    default=Window.M1.value,
    show_default=True,
    help="Time window ending at the as-of month.",
)
#: ``--kpi``, repeatable: the KPIs of a table or chart.
kpis_option = shared_option("--kpi", "kpi_ids", multiple=True, help="KPI id (repeatable).")
#: ``--entity``, repeatable: the entities of a table or chart.
entity_names_option = shared_option(
    "--entity", "entity_names", multiple=True, help="Entity name, product or group (repeatable)."
)
#: ``--per-account``: divide by the mean number of active accounts.
per_account_option = shared_option("--per-account", is_flag=True)
#: ``--format`` of a table: CSV or JSON on stdout, or an XLSX file.
table_format_option = shared_option(
    "--format",
    "output_format",
    type=click.Choice(["csv", "json", "xlsx"]),
    default="csv",
    show_default=True,
    help="Output format; xlsx needs --output.",
)
#: ``--output``: a file to write, checked before any work is done.
output_option = shared_option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    callback=output_path,
    help="Write to this file instead of stdout.",
)


def definitions_arg(definitions: Sequence[Path]) -> list[Path] | None:
    """``None`` (built-in sheet plus plugins) when no ``--definitions`` was given."""
    return list(definitions) or None


def sheet_options(function: Any) -> Any:
    """``--data``, ``--definitions``, ``--entities`` and ``--release``: what a sheet is opened from."""
    for option in reversed(
        (
            data_option(
                help="Observations: a CSV or Parquet file, or a store: its URL "
                "(sqlite:///kpisheet.db) or SQLite file (kpisheet.db). Default: the demo sheet."
            ),
            definitions_option(),
            entities_option(
                help="Entity hierarchy YAML. Default: a store release's own hierarchy, else the "
                "demo hierarchy."
            ),
            release_option(help="Store release id to read. Default: the newest."),
        )
    ):
        function = option(function)
    return function


def open_sheet(
    data: str | None,
    definitions: Sequence[Path],
    entities: Path | None,
    release: int | None,
    *,
    verify: bool = False,
) -> Any:
    """Open the sheet the common options describe (the demo sheet where nothing is given)."""
    from kpisheet.sheet import open as open_kpisheet

    return open_kpisheet(
        data,
        definitions=definitions_arg(definitions),
        entities=entities,
        release=release,
        verify=verify,
    )


@click.group(cls=KpisheetCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kpisheet")
def main() -> None:
    """kpisheet: monthly KPI sheets with KPIs declared in YAML."""


@main.command()
@definitions_option()
@entities_option(help="Entity hierarchy YAML to check.")
@data_option(
    help="Observations (CSV, Parquet, or a store: URL or SQLite file) to check against both."
)
def validate(definitions: tuple[Path, ...], entities: Path | None, data: str | None) -> None:
    """Check KPI definitions (and an entity hierarchy and data, if given).

    Data from a store is checked against the checksum of its newest release too.
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
    from kpisheet.store import store_url_of

    # A store's releases bring their own hierarchy; other data is checked against the demo's.
    own_hierarchy = entities is None and data is not None and store_url_of(data) is not None
    if (entities is not None or data is not None) and not own_hierarchy:
        try:
            from kpisheet.demo import DEMO_ENTITIES

            hierarchy = load_hierarchy(entities if entities is not None else DEMO_ENTITIES)
            click.echo(f"OK: {len(hierarchy.leaves)} products in the entity hierarchy.")
        except ProblemsError as exc:
            problems.append(exc.report())
    if data is not None:
        if registry is None or (hierarchy is None and not own_hierarchy):
            problems.append(
                f"data {data} not checked: fix the definitions and the entity hierarchy first."
            )
        else:
            sheet = open_sheet(data, definitions, entities, None, verify=True)
            click.echo(
                f"OK: {sheet.observation_count} observations, months {sheet.months[0]} to {sheet.months[-1]}."
            )
    if problems:
        raise UserError("\n".join(problems))


@main.command()
@sheet_options
@as_of_option()
@window_option()
@kpis_option(help="KPI id (repeatable). Default: all KPIs.")
@entity_names_option()
@click.option(
    "--level",
    "level_names",
    multiple=True,
    help="Level: product, a hierarchy level, total or a view (repeatable).",
)
@per_account_option(help="Divide by the mean number of active accounts of the window.")
@click.option(
    "--flagged",
    is_flag=True,
    help="Only rows whose change passes their KPI's highlight threshold (complete comparisons only).",
)
@table_format_option()
@output_option()
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
    flagged: bool,
    output_format: str,
    output: Path | None,
) -> None:
    """Print the KPI table of one window with the previous-year comparison (as sheet.query).

    With --flagged, only the rows over their KPI's highlight threshold (docs/analysts.md).
    """
    sheet = open_sheet(data, definitions, entities, release)
    result = sheet.query(
        as_of=as_of,
        window=window,
        kpis=list(kpi_ids) or None,
        entities=list(entity_names) or None,
        levels=list(level_names) or None,
        per_account=per_account,
    )
    if flagged:
        result = sheet.flagged(result, per_account=per_account).reset_index(drop=True)
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
        if flagged:
            selection["Nur über Schwellenwert"] = "ja"
        with writing(output):
            sheet.to_excel(result, output, selection=selection)
        click.echo(f"Wrote {len(result)} rows to {output}", err=True)
        return
    from kpisheet.export import neutralise_formulas

    safe = neutralise_formulas(result)  # as the XLSX's quote prefix: no text runs as a formula
    if output_format == "json":
        text = safe.to_json(orient="records", force_ascii=False, indent=1)
    else:
        text = safe.to_csv(index=False)
    if output is None:
        click.echo(text, nl=False)
    else:
        with writing(output):
            output.write_text(text, encoding="utf-8")
        click.echo(f"Wrote {len(result)} rows to {output}", err=True)


@main.command("explain")
@sheet_options
@click.option("--kpi", "kpi_id", required=True, help="KPI id to explain.")
@click.option("--entity", "entity_name", required=True, help="The group whose change is explained.")
@as_of_option()
@window_option()
@click.option(
    "--by",
    default=None,
    help="Members: product, a level or a view (e.g. cardprofile). Default: the next finer level.",
)
@table_format_option()
@output_option()
def explain_command(
    data: str | None,
    definitions: tuple[Path, ...],
    entities: Path | None,
    release: int | None,
    kpi_id: str,
    entity_name: str,
    as_of: str | None,
    window: str,
    by: str | None,
    output_format: str,
    output: Path | None,
) -> None:
    """Explain a group's change against the previous year: one row per member with its
    contribution (summing to the group's change); rate and mix effects for a ratio."""
    from kpisheet.export import neutralise_formulas, write_explanation_xlsx

    if output_format == "xlsx" and output is None:
        raise UserError("--format xlsx writes a file; give it with --output FILE.xlsx")
    sheet = open_sheet(data, definitions, entities, release)
    explanation = sheet.explain(kpi_id, entity_name, as_of=as_of, window=window, by=by)
    members = explanation.members
    if not explanation.fully_explained:
        click.echo(f"note: {explanation.message}", err=True)
    if output_format == "xlsx":
        assert output is not None
        with writing(output):
            write_explanation_xlsx(
                explanation,
                output,
                registry=sheet.registry,
                release=sheet.release,
                hierarchy=sheet.hierarchy,
            )
        click.echo(f"Wrote {len(members)} rows to {output}", err=True)
        return
    safe = neutralise_formulas(members)  # as the XLSX's quote prefix: no text runs as a formula
    if output_format == "json":
        text = safe.to_json(orient="records", force_ascii=False, indent=1)
    else:
        text = safe.to_csv(index=False)
    if output is None:
        click.echo(text, nl=False)
    else:
        with writing(output):
            output.write_text(text, encoding="utf-8")
        click.echo(f"Wrote {len(members)} rows to {output}", err=True)


@main.command()
@sheet_options
@kpis_option(required=True)
@entity_names_option(required=True)
@as_of_option(help="Last month of the chart, YYYY-MM. Default: the newest month.")
@per_account_option(help="Divide by the mean number of active accounts of each month.")
@output_option(
    required=True,
    help="File to write: .png (for slides) or .html (interactive, works offline).",
)
def chart(
    data: str | None,
    definitions: tuple[Path, ...],
    entities: Path | None,
    release: int | None,
    kpi_ids: tuple[str, ...],
    entity_names: tuple[str, ...],
    as_of: str | None,
    per_account: bool,
    output: Path,
) -> None:
    """Draw the 13-month line chart: one KPI for up to 8 entities, or one entity with up to 2 KPIs."""
    suffix = output.suffix.lower()
    if suffix not in (".png", ".html"):
        raise click.BadParameter(
            f"{output.name!r} must end in .png or .html", param_hint="'--output'"
        )
    from kpisheet import charts

    sheet = open_sheet(data, definitions, entities, release)
    reason = charts.chart_rule(kpi_ids, entity_names, sheet.registry)
    if reason is not None:
        raise UserError(
            f"no chart for {len(set(kpi_ids))} KPI(s) and {len(set(entity_names))} entities: "
            f"a chart shows one KPI for up to {charts.MAX_ENTITIES} entities, "
            f"or one entity with up to {charts.MAX_KPIS} KPIs"
        )
    series = sheet.series(list(kpi_ids), list(entity_names), as_of=as_of, per_account=per_account)
    save = charts.save_png if suffix == ".png" else charts.save_html
    with writing(output):
        save(series, sheet.registry, output, per_account=per_account)
    click.echo(f"Wrote {output}", err=True)


@main.command()
@definitions_option()
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
    echo_table(header, rows)


def echo_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print rows as a plain text table under a header and a rule; control characters escaped."""
    rows = [tuple(printable(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def parse_params(
    ctx: click.Context, param: click.Parameter, items: Sequence[str]
) -> dict[str, str]:
    """``--param NAME=VALUE`` options as a mapping of query parameters."""
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", ctx=ctx, param=param)
        params[name.strip()] = value
    return params


@main.command("ingest")
@click.option(
    "--source",
    "sources",
    required=True,
    multiple=True,
    help="A CSV or Parquet file or glob ('history/*.csv'), a database URL to run --query on, or "
    "a store (repeatable; with overlap: later the source listed later wins).",
)
@store_option(
    required=True,
    help="Store to write the release to: a URL (sqlite:///kpisheet.db) or a SQLite file.",
)
@click.option(
    "--query",
    "queries",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="A .sql file run on the database source (repeatable); :name parameters bound from --param.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    callback=parse_params,
    help="Value of a query parameter :NAME (repeatable).",
)
@definitions_option()
@entities_option(
    help="Entity hierarchy YAML. Default: --entities-source, else the previous release's "
    "hierarchy, else the demo hierarchy."
)
@click.option(
    "--entities-source",
    default=None,
    help="The hierarchy from a product table: a CSV or Parquet file, or a database URL with "
    "--entities-query; its columns are named in the config's 'entities:' section.",
)
@click.option(
    "--entities-query",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A .sql file giving the product table from the --entities-source database.",
)
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Ingest configuration (YAML or TOML): column names, exclusions, overlap, checks.",
)
@release_option(
    help="With a store URL as the source: the release to copy (roll back). Default: its newest."
)
@click.option("--note", default="", help="A note recorded with the release.")
@click.option(
    "--strict", is_flag=True, help="Make plausibility warnings errors: then nothing is written."
)
def ingest_command(
    sources: tuple[str, ...],
    store_url: str,
    queries: tuple[Path, ...],
    params: dict[str, str],
    definitions: tuple[Path, ...],
    entities: Path | None,
    entities_source: str | None,
    entities_query: Path | None,
    config: Path | None,
    release: int | None,
    note: str,
    strict: bool,
) -> None:
    """Load sources into the store as a new release: validated completely, or nothing is written.

    Prints plausibility warnings and what changed against the previous release.
    """
    from kpisheet.ingest import ingest
    from kpisheet.store import display_url

    if params and not queries and entities_query is None:
        raise UserError(
            f"--param {', '.join(params)} binds a parameter of a --query or --entities-query, "
            "and neither was given; give the query with --query FILE.sql, or leave out --param"
        )
    refuse_memory_store(store_url, "--store")
    info = ingest(
        list(sources),
        store_url,
        query=list(queries) or None,
        params=params,
        definitions=definitions_arg(definitions),
        entities=entities,
        entities_source=entities_source,
        entities_query=entities_query,
        config=config,
        release=release,
        note=note,
        strict=strict,
        echo=lambda message: click.echo(printable(message), err=True),
    )
    click.echo(
        f"release {info.id} written to {display_url(store_url)}: {info.row_count:,} rows, "
        f"newest month {info.newest_month}"
    )


@main.group(cls=KpisheetGroup, invoke_without_command=True)
@store_option()
@click.pass_context
def releases(ctx: click.Context, store_url: str | None) -> None:
    """List the releases of a store, oldest first; queries read the newest unless told otherwise.

    `kpisheet releases show ID` shows one release with its warnings, `kpisheet releases diff`
    what a release changed, `kpisheet releases verify` checks them against their checksums.
    """
    ctx.obj = store_url
    if ctx.invoked_subcommand is not None:
        return
    from kpisheet.demo import demo_store_url
    from kpisheet.store import Store

    refuse_memory_store(store_url, "--store")
    with Store(store_url or demo_store_url()) as store:
        infos = store.releases()
    if not infos:
        click.echo(f"no releases in {store.url}")
        return
    header = ("id", "created (UTC)", "newest month", "rows", "source", "note")
    rows = [
        (
            str(info.id),
            info.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            info.newest_month,
            f"{info.row_count:,}",
            info.source,
            info.note,
        )
        for info in infos
    ]
    echo_table(header, rows)
    click.echo(f"\nnewest: release {infos[-1].id} (read by default; --release ID reads another)")


def _store_of(ctx: click.Context, store_url: str | None) -> str:
    """The store a ``releases`` subcommand reads: its own --store, the group's, or the demo's."""
    from kpisheet.demo import demo_store_url

    return store_url or ctx.obj or demo_store_url()


@releases.command("show")
@click.argument("release_id", type=int, required=False)
@store_option()
@click.pass_context
def releases_show(ctx: click.Context, release_id: int | None, store_url: str | None) -> None:
    """Show one release (default the newest): its record, hierarchy and plausibility warnings."""
    from kpisheet.store import Store

    with Store(_store_of(ctx, store_url)) as store:
        infos = {info.id: info for info in store.releases()}
        if not infos:
            raise UserError(f"no releases in {store.url}")
        info = infos[max(infos)] if release_id is None else infos.get(release_id)
        if info is None:
            raise UserError(
                f"release {release_id} does not exist in store {store.url}; "
                f"releases: {', '.join(map(str, infos))}"
            )
        hierarchy = store.hierarchy(info.id)
        warnings = store.warnings(info.id)
    click.echo(f"release {info.id} of {store.url}")
    for label, value in (
        ("created (UTC)", info.created_at.strftime("%Y-%m-%d %H:%M:%S")),
        ("newest month", info.newest_month),
        ("rows", f"{info.row_count:,}"),
        ("source", info.source),
        ("note", info.note),
        ("checksum", info.checksum),
        (
            "hierarchy",
            f"{hierarchy.total}: {len(hierarchy.leaves)} products, levels "
            f"{', '.join(hierarchy.levels) or 'none'}"
            if hierarchy is not None
            else "not recorded (loaded before releases kept one)",
        ),
    ):
        click.echo(f"  {label + ':':<15}{value}")
    click.echo(f"warnings: {len(warnings)}")
    for warning in warnings:
        click.echo(f"  {warning.message}")


@releases.command("diff")
@click.argument("old", type=int, required=False)
@click.argument("new", type=int, required=False)
@store_option()
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="table: a summary with the largest restatements; csv: one row per change; json.",
)
@click.pass_context
def releases_diff(
    ctx: click.Context,
    old: int | None,
    new: int | None,
    store_url: str | None,
    output_format: str,
) -> None:
    """What release NEW changed against release OLD (default: the newest two).

    Months, products and KPIs added or removed, products moved in the hierarchy, and restated
    values: counted per month and KPI, the largest with their old and new value.
    """
    from kpisheet.diff import diff_releases
    from kpisheet.store import Store

    with Store(_store_of(ctx, store_url)) as store:
        ids = [info.id for info in store.releases()]
        if old is None:
            if len(ids) < 2:
                raise UserError(
                    f"store {store.url} has only {len(ids)} release{'s' if len(ids) != 1 else ''}; "
                    "a diff needs two"
                )
            old, new = ids[-2], ids[-1]
        elif new is None:
            raise UserError("give two release ids (OLD NEW), or none for the newest two")
        _, before = store.read(old)
        _, after = store.read(new)
        changes = diff_releases(
            before,
            after,
            old_hierarchy=store.hierarchy(old),
            new_hierarchy=store.hierarchy(new),
            old_id=old,
            new_id=new,
        )
    if output_format == "json":
        click.echo(changes.to_json())
    elif output_format == "csv":
        click.echo(changes.to_frame().to_csv(index=False), nl=False)
    else:
        for line in changes.summary():
            click.echo(line)


@main.group(cls=KpisheetGroup)
def store() -> None:
    """Look after a store: upgrade one written by an earlier kpisheet."""


@store.command("upgrade")
@store_option(required=True, help="Store: a URL or a SQLite file.")
@entities_option(
    type=click.Path(path_type=Path, dir_okay=False),
    help="Entity hierarchy YAML to record for releases that have none (the one they were "
    "loaded with).",
)
def store_upgrade(store_url: str, entities: Path | None) -> None:
    """Upgrade a store to this kpisheet's schema; its releases are kept as they are."""
    from kpisheet.hierarchy import load_hierarchy
    from kpisheet.store import Store

    hierarchy = load_hierarchy(entities) if entities is not None else None
    with Store(store_url) as target:
        done = target.upgrade(hierarchy)
    if not done:
        click.echo(f"store {target.url} is up to date; nothing to do")
    for line in done:
        click.echo(line)


@releases.command("verify")
@click.argument("release_id", metavar="[ID]", type=int, required=False)
@store_option()
@click.pass_obj
def releases_verify(group_store: str | None, release_id: int | None, store_url: str | None) -> None:
    """Recompute the checksum of release ID (default: every release) from the stored values.

    Exit 0 when each matches the checksum written with it; else name each changed release
    and exit 1.
    """
    from kpisheet.demo import demo_store_url
    from kpisheet.store import Store

    store_url = store_url or group_store
    refuse_memory_store(store_url, "--store")
    with Store(store_url or demo_store_url()) as store:
        checks = store.verify(release_id)
    if not checks:
        click.echo(f"no releases in {store.url}")
        return
    for check in checks:
        if check.ok:
            click.echo(printable(str(check)))
    changed = [check for check in checks if not check.ok]
    if changed:
        count = len(changed)
        raise UserError(
            f"{count} release{'s' if count != 1 else ''} of {store.url} changed since written:\n"
            + "\n".join(f"  {check}" for check in changed)
        )


@main.command()
@click.option(
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory to write the demo project to (created if needed).",
)
def demo(output: Path) -> None:
    """Write a ready demo project: a SQLite store with the demo data, KPI definitions, entities."""
    import shutil

    from kpisheet.builtin import builtin_definitions_dir
    from kpisheet.demo import DEMO_ENTITIES, write_demo_store
    from kpisheet.hierarchy import load_hierarchy
    from kpisheet.store import sqlite_url

    store, definitions, entities = (
        output / "kpisheet.db",
        output / "kpi_definitions",
        output / "entities.yaml",
    )
    existing = [str(path) for path in (store, definitions, entities) if path.exists()]
    if existing:
        raise UserError(
            f"{', '.join(existing)} already exist; choose a new directory for the demo project"
        )
    with writing(output):
        output.mkdir(parents=True, exist_ok=True)
        shutil.copytree(builtin_definitions_dir(), definitions)
        shutil.copyfile(DEMO_ENTITIES, entities)
    info = write_demo_store(sqlite_url(store))
    kpi_count = len(load_kpis([definitions]))
    product_count = len(load_hierarchy(entities).leaves)
    data = "--data sqlite:///kpisheet.db --definitions kpi_definitions --entities entities.yaml"
    click.echo(
        f"Demo project written to {output}:\n"
        f"  kpisheet.db       store, release {info.id}: {info.row_count:,} observations, "
        f"newest month {info.newest_month}\n"
        f"  kpi_definitions/  {kpi_count} KPI definitions (YAML)\n"
        f"  entities.yaml     entity hierarchy of {product_count} products\n"
        "Next:\n"
        f"  cd {output}\n"
        f"  kpisheet query {data} --window 12M\n"
        "  kpisheet releases --store sqlite:///kpisheet.db\n"
        "  kpisheet ingest --source NEW.csv --store sqlite:///kpisheet.db "
        "--definitions kpi_definitions --entities entities.yaml"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
