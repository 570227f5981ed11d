"""The ``kpisheet`` command line: one click group, a command per job."""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from kpisheet.constants import Window
from kpisheet.errors import KpisheetError, printable
from kpisheet.plugins import load_kpis

DEFINITIONS_HELP = "KPI definition file or directory (repeatable). Default: the built-in sheet plus installed plugins."


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
        help="Entity hierarchy YAML. Default: a store release's own hierarchy, else the demo "
        "hierarchy.",
    )(function)
    function = definitions_option(function)
    return click.option(
        "--data",
        default=None,
        help="Observations: a CSV or Parquet file, or a store: its URL (sqlite:///kpisheet.db) or "
        "SQLite file (kpisheet.db). Default: the demo sheet.",
    )(function)


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
    "--data",
    default=None,
    help="Observations (CSV, Parquet, or a store: URL or SQLite file) to check against both.",
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
    "--flagged",
    is_flag=True,
    help="Only rows whose change passes their KPI's highlight threshold (complete comparisons only).",
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
    callback=output_path,
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
@click.option(
    "--by",
    default=None,
    help="Members: product, a level or a view (e.g. cardprofile). Default: the next finer level.",
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
                explanation, output, registry=sheet.registry, release=sheet.release
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
@click.option("--kpi", "kpi_ids", multiple=True, required=True, help="KPI id (repeatable).")
@click.option(
    "--entity",
    "entity_names",
    multiple=True,
    required=True,
    help="Entity name, product or group (repeatable).",
)
@click.option(
    "--as-of",
    "as_of",
    default=None,
    help="Last month of the chart, YYYY-MM. Default: the newest month.",
)
@click.option(
    "--per-account",
    is_flag=True,
    help="Divide by the mean number of active accounts of each month.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    callback=output_path,
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
@click.option(
    "--store",
    "store_url",
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
@definitions_option
@click.option(
    "--entities",
    type=click.Path(path_type=Path),
    default=None,
    help="Entity hierarchy YAML. Default: --entities-source, else the previous release's "
    "hierarchy, else the demo hierarchy.",
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
@click.option(
    "--release",
    type=int,
    default=None,
    help="With a store URL as the source: the release to copy (roll back). Default: its newest.",
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


STORE_HELP = "Store: a URL (sqlite:///kpisheet.db) or a SQLite file. Default: the demo store."


@main.group(cls=KpisheetGroup, invoke_without_command=True)
@click.option("--store", "store_url", default=None, help=STORE_HELP)
@click.pass_context
def releases(ctx: click.Context, store_url: str | None) -> None:
    """List the releases of a store, oldest first; queries read the newest unless told otherwise.

    `kpisheet releases show ID` shows one release with its warnings, `kpisheet releases diff`
    what a release changed, `kpisheet releases verify` checks them against their checksums.
    """
    ctx.obj = store_url
    if ctx.invoked_subcommand is not None:
        return
    from kpisheet.store import Store, demo_store_url

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
    from kpisheet.store import demo_store_url

    return store_url or ctx.obj or demo_store_url()


@releases.command("show")
@click.argument("release_id", type=int, required=False)
@click.option("--store", "store_url", default=None, help=STORE_HELP)
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
@click.option("--store", "store_url", default=None, help=STORE_HELP)
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
@click.option("--store", "store_url", required=True, help="Store: a URL or a SQLite file.")
@click.option(
    "--entities",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
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
@click.option("--store", "store_url", default=None, help=STORE_HELP)
@click.pass_obj
def releases_verify(group_store: str | None, release_id: int | None, store_url: str | None) -> None:
    """Recompute the checksum of release ID (default: every release) from the stored values.

    Exit 0 when each matches the checksum written with it; else name each changed release
    and exit 1.
    """
    from kpisheet.store import Store, demo_store_url

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
    from kpisheet.demo import DEMO_ENTITIES
    from kpisheet.hierarchy import load_hierarchy
    from kpisheet.store import sqlite_url, write_demo_store

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


@main.command()
@click.option("--port", type=int, default=5006, show_default=True, help="Port to listen on.")
@click.option(
    "--address", default=None, help="Address to listen on, e.g. 0.0.0.0. Default: localhost."
)
@click.option(
    "--store",
    "store_url",
    default=None,
    help="Store URL to serve; new releases appear without a restart. Default: the demo store.",
)
@definitions_option
@click.option(
    "--entities",
    type=click.Path(path_type=Path),
    default=None,
    help="Entity hierarchy YAML. Default: each release's own hierarchy (the demo's for --demo).",
)
@click.option(
    "--auth",
    "auth_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Users file (see `kpisheet users add`); with it a login guards every page.",
)
@click.option("--demo", is_flag=True, help="Serve the bundled demo sheet (ignores --store).")
@click.option(
    "--poll-seconds",
    type=click.FloatRange(min=0.2),
    default=30.0,
    show_default=True,
    help="How often open pages look for a new release in the store.",
)
@click.option(
    "--usage-log",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Append the usage log (one JSON line per interaction) here. Default: stderr.",
)
@click.option(
    "--allow-origin",
    "allow_origins",
    multiple=True,
    help="Extra HOST[:PORT] the app may be opened from (behind a proxy); repeatable.",
)
@click.option(
    "--secure-cookies",
    is_flag=True,
    help="Mark the login cookies Secure (behind a TLS proxy); over HTTPS they always are.",
)
@click.option(
    "--session-idle-minutes",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="A login session ends after this long without activity.",
)
@click.option(
    "--session-hours",
    type=click.FloatRange(min=0.1),
    default=12.0,
    show_default=True,
    help="A login session ends this long after the login, however active.",
)
@click.option(
    "--login-backoff-seconds",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Wait after a failed login (per user name and per address); doubles per failure.",
)
@click.option(
    "--login-lock-after",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Failed logins in a row (per user name and per address) that lock further attempts.",
)
@click.option(
    "--login-lock-minutes",
    type=click.FloatRange(min=0),
    default=15.0,
    show_default=True,
    help="How long such a lock lasts.",
)
@click.option("--show", is_flag=True, help="Open the app in the web browser.")
def serve(
    port: int,
    address: str | None,
    store_url: str | None,
    definitions: tuple[Path, ...],
    entities: Path | None,
    auth_file: Path | None,
    demo: bool,
    poll_seconds: float,
    usage_log: Path | None,
    allow_origins: tuple[str, ...],
    secure_cookies: bool,
    session_idle_minutes: float,
    session_hours: float,
    login_backoff_seconds: float,
    login_lock_after: int,
    login_lock_minutes: float,
    show: bool,
) -> None:
    """Serve the web app (default: the demo sheet at http://localhost:5006)."""
    from kpisheet_ui.serve import serve as serve_app
    from kpisheet_ui.serve import sheet_config
    from kpisheet_ui.sessions import SessionSettings
    from kpisheet_ui.throttle import ThrottleSettings

    if not demo:
        refuse_memory_store(store_url, "--store")
    check_port(address, port)  # before the sheet is opened: a taken port fails at once
    config = sheet_config(
        None if demo else store_url, definitions, entities, poll_seconds=poll_seconds
    )
    try:
        serve_app(
            config,
            port=port,
            address=address,
            auth=auth_file,
            allow_origins=allow_origins,
            usage_log=usage_log,
            show=show,
            sessions=SessionSettings(
                idle_seconds=session_idle_minutes * 60,
                absolute_seconds=session_hours * 3600,
                secure_cookies=secure_cookies,
            ),
            throttle=ThrottleSettings(
                base_seconds=login_backoff_seconds,
                lock_after=login_lock_after,
                lock_seconds=login_lock_minutes * 60,
            ),
        )
    except OSError as exc:
        if exc.errno not in _PORT_PROBLEMS:
            raise
        raise port_error(address, port, exc.errno) from exc


#: Why a server cannot listen, by ``errno``.
_PORT_PROBLEMS = {
    errno.EADDRINUSE: "the port is in use (another server?)",
    errno.EADDRNOTAVAIL: "the address is not one of this machine's",
    errno.EACCES: "the port needs administrator rights",
}


def port_error(address: str | None, port: int, number: int) -> UserError:
    """The one-line message for a server that cannot listen on ``address:port``."""
    return UserError(
        f"cannot serve on {address or 'localhost'}:{port}: {_PORT_PROBLEMS[number]}; "
        "choose another with --port/--address"
    )


def check_port(address: str | None, port: int) -> None:
    """Refuse a port another program listens on (or one that needs privileges), by trying it.

    The probe binds as the server will (``SO_REUSEADDR``), so a port left in TIME_WAIT by a
    server just stopped is not refused; other failures are left to the server to report.
    """
    import socket

    try:
        addresses = socket.getaddrinfo(
            address or "localhost", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return
    for family, kind, protocol, _, where in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(where)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise port_error(address, port, exc.errno) from exc


@main.group(cls=KpisheetGroup)
def users() -> None:
    """Manage the users of the web app's login (`kpisheet serve --auth FILE`)."""


def _auth_file_option(help_text: str) -> Any:
    return click.option(
        "--auth",
        "auth_file",
        type=click.Path(path_type=Path, dir_okay=False),
        required=True,
        envvar="KPISHEET_AUTH",
        help=f"{help_text} Env: KPISHEET_AUTH.",
    )


_password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin instead of prompting.",
)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@users.command("add")
@click.argument("name")
@_auth_file_option("Users file to write (created owner-only if missing).")
@_password_stdin_option
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="LEVEL=NAME",
    help="Show this user only the entities inside LEVEL=NAME (e.g. mandant=Alpine); "
    "repeatable, several scopes add up. Without --scope an existing user keeps theirs.",
)
def users_add(name: str, auth_file: Path, password_stdin: bool, scopes: tuple[str, ...]) -> None:
    """Add user NAME to the users file, or give NAME a new password.

    Only a salted scrypt hash of the password is stored.
    """
    from kpisheet_ui.scopes import parse_scope
    from kpisheet_ui.users import add_user

    for scope in scopes:
        parse_scope(scope)  # a malformed scope fails before the password prompt
    password = _read_password(password_stdin)
    new = add_user(auth_file, name, password, scopes=list(scopes) if scopes else None)
    scoped = f" (scopes: {', '.join(scopes)})" if scopes else ""
    click.echo(f"{'added user' if new else 'new password for'} {name} in {auth_file}{scoped}")


@users.command("passwd")
@click.argument("name")
@_auth_file_option("Users file to change.")
@_password_stdin_option
def users_passwd(name: str, auth_file: Path, password_stdin: bool) -> None:
    """Give user NAME a new password; their open sessions end."""
    from kpisheet_ui.users import require_user, set_password

    require_user(auth_file, name)  # an unknown user fails before the password prompt
    set_password(auth_file, name, _read_password(password_stdin))
    click.echo(f"new password for {name} in {auth_file}; their open sessions end")


@users.command("remove")
@click.argument("name")
@_auth_file_option("Users file to change.")
def users_remove(name: str, auth_file: Path) -> None:
    """Remove user NAME; their open sessions end."""
    from kpisheet_ui.users import remove_user

    remove_user(auth_file, name)
    click.echo(f"removed user {name} from {auth_file}; their open sessions end")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
