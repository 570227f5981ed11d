"""The Panel views of the app: thin widgets and panes over :class:`~kpisheet_ui.state.SheetState`.

``create_app(config)`` builds one session's page; ``kpisheet serve`` serves it, and so does
``panel serve src/kpisheet_ui/app.py`` (configured by the ``KPISHEET_*`` environment variables).
``KPISHEET_PAGE_ROWS`` sets how many rows the table shows at once (default
:data:`~kpisheet_ui.state.PAGE_ROWS`); a larger selection is shown page by page.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import logging
import os
import uuid
import weakref
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import panel as pn
import param

from kpisheet.errors import ChecksumError, KpisheetError
from kpisheet.presentation import words
from kpisheet_ui import widgets
from kpisheet_ui.escape import html_column, html_text, markdown_text
from kpisheet_ui.explain_view import ExplainPanel, ExplainState
from kpisheet_ui.sessions import LoginSession, session_of
from kpisheet_ui.source import SheetConfig, SheetSource, get_source, refusal_notice
from kpisheet_ui.state import PAGE_ROWS, SheetState
from kpisheet_ui.table import (
    CHANGE_COLUMN,
    CHANGE_PCT_COLUMN,
    ENTITY_COLUMN,
    GROUP_COLUMN,
    HIGHLIGHT_COUNT,
    KPI_COLUMN,
    LEVEL_COLUMN,
    MONTHS_COLUMN,
    NOTE_COLUMN,
    NUMBER_COLUMNS,
    PREVIOUS_COLUMN,
    VALUE_COLUMN,
)
from kpisheet_ui.usage import USAGE_LOG_ENV, USAGE_LOGGER, configure_usage_log
from kpisheet_ui.widgets import TextMultiChoice

log = logging.getLogger(__name__)

TITLE = "KPI-Sheet"
ACCENT = "#1F5F8B"
#: Most pixels the table takes; a shorter table takes only the height of its rows, a longer one
#: scrolls. (Tabulator's own ``maxHeight``: a height set from Python on every change would rebuild
#: the table in the browser while the next change's cell styles arrive.)
TABLE_HEIGHT = 560
#: Column widths in pixels: wide enough for billions of francs with centimes.
COLUMN_WIDTHS = {
    KPI_COLUMN: 230,
    ENTITY_COLUMN: 230,
    LEVEL_COLUMN: 110,
    VALUE_COLUMN: 185,
    PREVIOUS_COLUMN: 185,
    CHANGE_COLUMN: 185,
    CHANGE_PCT_COLUMN: 100,
    MONTHS_COLUMN: 80,
}
SIDEBAR_WIDTH = 330
#: Environment variable: rows of the table shown at once.
PAGE_ROWS_ENV = "KPISHEET_PAGE_ROWS"

#: Tabulator's group headers count rows in English ("14 items"): hidden, the group name is enough.
TABLE_CSS = """
.tabulator-group span { display: none; }
.tabulator-group { font-weight: 600; background: #EEF3F8; }
"""

LEGEND = words.table_legend(HIGHLIGHT_COUNT)
#: Columns whose cells carry the row's reason as a tooltip: they are rendered as (escaped) HTML.
REASON_COLUMNS = (CHANGE_COLUMN, CHANGE_PCT_COLUMN, MONTHS_COLUMN)


def with_reasons(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the browser gets it: cells of :data:`REASON_COLUMNS` as escaped HTML, with the
    row's reason (if any) as their tooltip, and without the reason column itself.

    Every text is escaped here (reasons name products, which come from data), so no markup from
    data reaches the page.
    """
    shown = table.drop(columns=[NOTE_COLUMN])
    reasons = table[NOTE_COLUMN].astype(str)
    titles = html_column(reasons)
    has_reason = reasons != ""
    for column in REASON_COLUMNS:
        texts = html_column(shown[column])
        wrapped = '<span title="' + titles + '">' + texts + "</span>"
        shown[column] = texts.where(~has_reason, wrapped)
    return shown


@functools.lru_cache(maxsize=64)
def css_declarations(css: str) -> list[tuple[str, str]]:
    """``"color: red; font-weight: bold"`` as Tabulator's cell style: (property, value) pairs."""
    pairs = (part.split(":", 1) for part in css.split(";") if ":" in part)
    return [(name.strip(), value.strip()) for name, value in pairs]


class KpiTable(pn.widgets.Tabulator):
    """The KPI table, whose cell styles come from a frame of CSS text (its styled rows only).

    Panel styles a Tabulator through pandas' ``Styler``, which costs about 0.3 s per page of
    2,500 rows on every change, most of a click's time on the server; here the styled cells go
    to Tabulator directly, in the form the ``Styler`` path would give them.
    """

    cell_css = param.Callable(default=None, doc="The current value's CSS frame (index ⊆ value's).")

    _rename: ClassVar[dict[str, str | None]] = {
        **pn.widgets.Tabulator._rename,
        "cell_css": None,  # not a property of the Bokeh model
    }

    def _process_column(self, values: Any, col: str, df: pd.DataFrame | None = None) -> Any:
        """A column of text goes to Bokeh as a numpy array of ``str``, which Bokeh sends as one
        list; as an array of Python objects it was encoded value by value (a page of 2,500 rows
        has 17,500 texts; the encoder's calls per click went from about 25,000 to 7,000)."""
        values = super()._process_column(values, col, df)
        if (
            isinstance(values, np.ndarray)
            and values.dtype == object
            and pd.api.types.infer_dtype(values, skipna=False) == "string"
        ):
            return values.astype(str)
        return values

    def _get_style_data(self, recompute: bool = True) -> dict[str, Any]:
        value = self.value
        if self.cell_css is None or value is None or value.empty:
            return super()._get_style_data(recompute)
        css = self.cell_css()
        rows = value.index.get_indexer(css.index)
        columns = value.columns.get_indexer(css.columns)
        offset = 1 + int(len(self.indexes) == 1)  # Tabulator's row header and the index column
        texts = css.to_numpy(dtype=object)
        styles: dict[int, dict[int, list[tuple[str, str]]]] = {}
        for i, j in zip(*np.nonzero(texts != ""), strict=True):
            cells = styles.setdefault(int(rows[i]), {})
            cells[offset + int(columns[j])] = css_declarations(texts[i, j])
        return {"id": uuid.uuid4().hex, "data": styles}


class AppView(param.Parameterized):
    """One session's page: the widgets, table, chart and downloads of a :class:`SheetState`."""

    def __init__(self, state: SheetState, source: SheetSource | None = None, **params: Any):
        super().__init__(**params)
        self.state = state
        self.source = source
        self.data_version = pn.pane.HTML(
            "", css_classes=["datenstand"], styles={"color": "white", "font-size": "15px"}
        )
        self.notice = pn.pane.Alert(
            "", alert_type="success", visible=False, css_classes=["neue-daten"]
        )
        self.notes = pn.pane.Alert(
            "", alert_type="warning", visible=False, css_classes=["hinweise"]
        )
        self.error = pn.pane.Alert("", alert_type="danger", visible=False, css_classes=["fehler"])
        self.table = KpiTable(
            with_reasons(state.table()),
            groupby=[GROUP_COLUMN],
            hidden_columns=[GROUP_COLUMN],
            show_index=False,
            pagination=None,
            disabled=True,
            selectable=False,
            sortable=False,
            layout="fit_data_table",
            widths=COLUMN_WIDTHS,
            text_align={column: "right" for column in NUMBER_COLUMNS},
            formatters={column: {"type": "html"} for column in REASON_COLUMNS},
            configuration={"maxHeight": f"{TABLE_HEIGHT}px"},
            sizing_mode="stretch_width",
            stylesheets=[TABLE_CSS],
            name="KPI-Tabelle",
            css_classes=["kpi-tabelle"],
        )
        self.table.cell_css = self.state.table_styles
        self.explain_state = ExplainState(state)
        self.explain_panel = ExplainPanel(self.explain_state, self._guard)
        self.table.on_click(self._row_clicked)
        self.page_text = pn.pane.HTML("", css_classes=["seite"], margin=(12, 10))
        self.first_page = self._page_button("« Erste", "seite-erste", lambda page: 1)
        self.previous_page = self._page_button("‹ Zurück", "seite-zurueck", lambda page: page - 1)
        self.next_page = self._page_button("Weiter ›", "seite-weiter", lambda page: page + 1)
        self.last_page = self._page_button("Letzte »", "seite-letzte", lambda page: state.pages)
        self.pager = pn.Row(
            self.first_page,
            self.previous_page,
            self.page_text,
            self.next_page,
            self.last_page,
            visible=False,
            css_classes=["blaettern"],
        )
        self.legend = pn.pane.Markdown(LEGEND, styles={"font-size": "12px", "color": "#555"})
        self.chart_message = pn.pane.Markdown(
            "", styles={"color": "#555"}, css_classes=["kein-diagramm"]
        )
        # One chart pane for the session, updated in place: replacing the pane on every change
        # tears down Bokeh views that the browser may still be laying out.
        self.chart_view = pn.pane.HoloViews(None, backend="bokeh", name="Verlauf")
        self.table_download = pn.widgets.FileDownload(
            callback=self._guard(state.table_xlsx),
            filename=state.table_filename(),
            label="Tabelle als XLSX",
            button_type="primary",
            css_classes=["download-tabelle"],
        )
        self.series_download = pn.widgets.FileDownload(
            callback=self._guard(state.series_xlsx),
            filename=state.series_filename(),
            label="Diagrammdaten als XLSX",
            css_classes=["download-verlauf"],
        )
        self.png_download = pn.widgets.FileDownload(
            callback=self._guard(state.chart_png),
            filename=state.chart_filename("png"),
            label="Diagramm als PNG",
            css_classes=["download-png"],
        )
        self.html_download = pn.widgets.FileDownload(
            callback=self._guard(state.chart_html),
            filename=state.chart_filename("html"),
            label="Diagramm als HTML",
            css_classes=["download-html"],
        )
        self.chart_downloads = pn.Row(self.series_download, self.png_download, self.html_download)
        # The chart's place holds the message, the chart and its downloads for good; a change
        # only shows or hides them, and the browser never lays out a view that is already gone.
        # (The chart pane's own ``visible`` cannot be set: Panel then fails to copy stylesheets
        # to its Bokeh pane; the column around it is shown or hidden instead.)
        self.chart_box = pn.Column(
            self.chart_view, self.chart_downloads, visible=False, sizing_mode="stretch_width"
        )
        self.chart_pane = pn.Column(
            self.chart_message,
            self.chart_box,
            sizing_mode="stretch_width",
            name="Diagramm",
            css_classes=["diagramm"],
        )
        state.param.watch(self._refresh, ["result", "page"])
        state.param.watch(self._show_notice, ["notice"])
        self._refresh()

    def _guard(self, make: Any) -> Any:
        """A download callback that shows errors on the page instead of failing silently."""

        def callback() -> Any:
            try:
                self.error.visible = False
                return make()
            except KpisheetError as exc:
                self.error.object = markdown_text(f"Download nicht möglich: {exc}")
                self.error.visible = True
                return None

        return callback

    def _row_clicked(self, event: Any) -> None:
        """A click on a row of the table explains that row's group and KPI ("Warum?")."""
        position = self.table.value.index[event.row]
        row = self.state._ordered_result().loc[position]
        self.explain_state.choose(str(row["entity"]), str(row["level"]), str(row["kpi"]))

    def _page_button(self, label: str, css_class: str, target: Any) -> pn.widgets.Button:
        """A button that turns the table to ``target(current page)``."""
        button = pn.widgets.Button(name=label, button_type="light", css_classes=[css_class])
        button.on_click(
            lambda event: setattr(
                self.state, "page", min(max(target(self.state.page), 1), self.state.pages)
            )
        )
        return button

    def _show_notice(self, *events: Any) -> None:
        self.notice.object = markdown_text(self.state.notice)
        self.notice.visible = bool(self.state.notice)

    def _refresh(self, *events: Any) -> None:
        """Bring every pane in line with the state after a change of selection, data or page."""
        state = self.state
        if {event.name for event in events} == {"page"}:
            with pn.io.hold():
                self._refresh_table()
            return
        self.data_version.object = html_text(state.data_version)
        with pn.io.hold():
            self._refresh_table()
            notes = state.notes()
            self.notes.object = "\n\n".join(markdown_text(note) for note in notes)
            self.notes.visible = bool(notes)
            self.table_download.filename = state.table_filename()
            self._refresh_chart()

    def _refresh_table(self) -> None:
        """The current page of the table, and the pager when there is more than one page."""
        state = self.state
        table = state.table()
        shown = with_reasons(table)
        # Tabulator writes group headers as HTML: the group names go to it escaped.
        shown[GROUP_COLUMN] = html_column(shown[GROUP_COLUMN])
        self.table.value = shown
        self.pager.visible = state.pages > 1
        self.page_text.object = html_text(state.page_text())
        self.first_page.disabled = self.previous_page.disabled = state.page <= 1
        self.next_page.disabled = self.last_page.disabled = state.page >= state.pages

    def _show_chart(self, shown: bool) -> None:
        """Show the chart and its downloads, or else the message; nothing is replaced."""
        self.chart_message.visible = not shown
        self.chart_box.visible = shown

    def _refresh_chart(self) -> None:
        state = self.state
        if state.shows_chart:
            try:
                chart = state.chart()
            except KpisheetError as exc:
                self.chart_message.object = markdown_text(f"Kein Diagramm: {exc}")
                self._show_chart(False)
                return
            self.series_download.filename = state.series_filename()
            self.png_download.filename = state.chart_filename("png")
            self.html_download.filename = state.chart_filename("html")
            self.chart_view.object = chart
            self._show_chart(True)
        else:
            self.chart_message.object = markdown_text(
                f"Kein Diagramm: {state.chart_message()} "
                "Entitäten und KPIs links unter «auswählen» eingrenzen."
            )
            self._show_chart(False)

    def sidebar(self) -> list[Any]:
        """The selection widgets."""
        p = self.state.param
        clear = pn.widgets.Button(
            name="Auswahl löschen", button_type="light", css_classes=["auswahl-loeschen"]
        )
        clear.on_click(lambda event: self.state.clear_all())
        buttons = {"button_type": "primary", "button_style": "outline"}
        return [
            widgets.Select.from_param(p.as_of, name="Stichtag", css_classes=["stichtag"]),
            widgets.RadioButtonGroup.from_param(
                p.window, name="Fenster", css_classes=["fenster"], **buttons
            ),
            widgets.Select.from_param(
                p.grouping, name="Entitäten-Gruppe", css_classes=["entitaeten-gruppe"]
            ),
            widgets.Select.from_param(p.kpi_group, name="KPI-Gruppe", css_classes=["kpi-gruppe"]),
            widgets.RadioButtonGroup.from_param(
                p.display, name="Tabelle gruppiert", css_classes=["darstellung"], **buttons
            ),
            pn.widgets.Checkbox.from_param(
                p.per_account, name=words.PER_ACCOUNT_WORD, css_classes=["pro-konto"]
            ),
            TextMultiChoice.from_param(
                p.entities,
                name="Entitäten (leer = alle)",
                placeholder="alle",
                solid=False,
                css_classes=["entitaeten"],
            ),
            TextMultiChoice.from_param(
                p.kpis,
                name="KPIs (leer = alle)",
                placeholder="alle",
                solid=False,
                css_classes=["kpis"],
            ),
            clear,
        ]

    def main(self) -> list[Any]:
        """The page body: notices, the table, the downloads and the chart."""
        return [
            pn.Column(
                self.notice,
                self.error,
                self.notes,
                self.table,
                self.pager,
                self.legend,
                pn.Row(self.table_download),
                self.explain_panel.view(),
                pn.pane.Markdown("### Verlauf der letzten 13 Monate"),
                self.chart_pane,
                sizing_mode="stretch_width",
            )
        ]

    def poll(self) -> Any:
        """A periodic callback: swap in the sheet of a new release when the store has one.

        It holds the page weakly: Panel drops a closed page's periodic callback only at its next
        run (up to the poll interval later), and until then a strong reference kept the page's
        table, chart and selection in memory.
        """
        source = self.source
        page = weakref.ref(self)

        async def check() -> None:
            if source is None or page() is None:
                return
            try:
                sheet = await asyncio.to_thread(source.current)
            except ChecksumError as exc:  # the page keeps the release it shows
                log.warning("refused a release: %s", exc)
                if (view := page()) is not None:
                    view.error.object = markdown_text(refusal_notice(exc))
                    view.error.visible = True
                return
            except KpisheetError as exc:
                log.warning("could not look for a new release: %s", exc)
                return
            view = page()
            if view is not None and sheet is not view.state.sheet:
                view.state.use_sheet(sheet)
                if sheet.release is not None and view.state.notice:
                    note = await asyncio.to_thread(source.changes_note, sheet.release.id)
                    if note:
                        view.state.notice = f"{view.state.notice} {note}"

        return check


def create_app(config: SheetConfig | None = None) -> pn.template.BootstrapTemplate:
    """One session's page for the sheet the configuration names (default: from the environment).

    With a login, the page belongs to the visitor's login session: a scoped user gets a
    :class:`~kpisheet_ui.scopes.ScopedSheetState`, and the page closes when the session ends.
    Without data (store missing, database down) the page says so and retries.
    """
    pn.extension("tabulator", notifications=False)
    config = config if config is not None else SheetConfig.from_env()
    source = get_source(config)
    login = _login_session()
    try:
        sheet = source.current()
    except KpisheetError as exc:
        log.error("page without data: %s", exc)
        return _unavailable_page(source, exc)
    page_rows = int(os.environ.get(PAGE_ROWS_ENV) or PAGE_ROWS)
    user = login.name if login is not None else None
    if login is not None and login.user.scopes:
        from kpisheet_ui.scopes import ScopedSheetState, visible_entities

        if not visible_entities(sheet.hierarchy, login.user.scopes):
            log.warning("user %r: no entity of the sheet lies inside their scopes", user)
            return _message_page(NO_ENTITIES_MESSAGE, login)
        state: SheetState = ScopedSheetState(
            sheet, scopes=login.user.scopes, user=user, page_rows=page_rows
        )
    else:
        state = SheetState(sheet, user=user, page_rows=page_rows)
    view = AppView(state, source)
    _register_page(view)
    header: list[Any] = [view.data_version]
    if login is not None:
        header.append(_login_header(login))
        _attach_page(login)
        state.param.watch(lambda *events: login.alive(), ["result", "page"])
    template = pn.template.BootstrapTemplate(
        title=TITLE,
        sidebar=view.sidebar(),
        main=view.main(),
        header=header,
        header_background=ACCENT,
        sidebar_width=SIDEBAR_WIDTH,
    )
    if source.config.store:
        pn.state.add_periodic_callback(view.poll(), period=int(config.poll_seconds * 1000))
    return template


#: Shown instead of the sheet while the data cannot be loaded.
UNAVAILABLE_MESSAGE = (
    "## Daten zurzeit nicht erreichbar\n\n"
    "Die Daten können im Moment nicht geladen werden (der Datenspeicher fehlt oder die Datenbank "
    "antwortet nicht). Die Seite versucht es alle {seconds} Sekunden erneut und zeigt die Daten, "
    "sobald sie wieder erreichbar sind."
)
#: Seconds between two attempts of a page without data.
UNAVAILABLE_RETRY_SECONDS = 10
#: Shown to a user whose scopes contain no entity of the sheet.
NO_ENTITIES_MESSAGE = (
    "## Keine Daten freigegeben\n\n"
    "Für Ihren Benutzer sind in diesen Daten keine Entitäten freigegeben. "
    "Bitte wenden Sie sich an die Betreuung des KPI-Sheets."
)
#: Seconds between telling a closed page to reload and closing its websocket.
CLOSE_DELAY_SECONDS = 1.0


#: The pages this process serves, by Bokeh session id. Held weakly: a page whose session was
#: destroyed leaves once nothing holds its objects any more, so this also shows that they are freed.
PAGES: weakref.WeakValueDictionary[str, AppView] = weakref.WeakValueDictionary()
#: Seconds after the last page closed at which memory is given back to the system: soon, and
#: twice more for what the closing leaves to be freed later (the pages' websockets and Panel's
#: deferred clean-ups; after 50 pages a later pass gave back about 60 MB more). Each closing
#: page starts the count anew, so many pages closing together cost three passes.
TRIM_DELAYS_SECONDS = (2.0, 10.0, 30.0)
_trims: list[Any] = []


def _register_page(view: AppView) -> None:
    """Count the page among :data:`PAGES`; when its session is destroyed, free its memory."""
    doc = pn.state.curdoc
    context = doc.session_context if doc is not None else None
    if context is None:  # not served (a test, a notebook)
        return
    PAGES[context.id] = view
    doc.on_session_destroyed(_page_closed)


def _page_closed(context: Any) -> None:
    """A page's session was destroyed: drop it and, once pages stop closing, collect garbage
    and hand freed memory back to the system (glibc keeps it otherwise, so the server's
    resident memory would stay at its high-water mark)."""
    from tornado.ioloop import IOLoop

    PAGES.pop(context.id, None)
    loop = IOLoop.current()
    while _trims:
        loop.remove_timeout(_trims.pop())
    _trims.extend(loop.call_later(delay, release_memory) for delay in TRIM_DELAYS_SECONDS)


def release_memory() -> None:
    """Collect garbage and return free heap memory to the system (``malloc_trim`` of glibc)."""
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.malloc_trim(0)


def _login_session() -> LoginSession | None:
    """The login session of this page's request (``None`` without a login)."""
    context = pn.state.curdoc.session_context if pn.state.curdoc is not None else None
    request = getattr(context, "request", None)
    return session_of(request) if request is not None else None


def _login_header(login: LoginSession) -> pn.pane.HTML:
    return pn.pane.HTML(
        f'<span style="color:white">Angemeldet: {html_text(login.name)} · '
        '<a href="./logout" style="color:white">Abmelden</a></span>',
        css_classes=["angemeldet"],
    )


def _message_page(message: str, login: LoginSession | None = None) -> pn.template.BootstrapTemplate:
    header = [_login_header(login)] if login is not None else []
    if login is not None:
        _attach_page(login)
    return pn.template.BootstrapTemplate(
        title=TITLE,
        main=[pn.pane.Markdown(message, css_classes=["meldung"])],
        header=header,
        header_background=ACCENT,
    )


def _unavailable_page(source: SheetSource, error: KpisheetError) -> pn.template.BootstrapTemplate:
    """A German notice that the data cannot be loaded (or, for a release whose checksum does not
    match, why it is refused); the page reloads once the data can be shown."""
    message = UNAVAILABLE_MESSAGE.format(seconds=UNAVAILABLE_RETRY_SECONDS)
    if isinstance(error, ChecksumError):
        message = f"## Daten zurückgehalten\n\n{markdown_text(refusal_notice(error))}"
    template = _message_page(message)
    location = pn.state.location

    async def retry() -> None:
        try:
            await asyncio.to_thread(source.current, max_age=0)
        except KpisheetError:
            return
        if location is not None:
            location.reload = True

    pn.state.add_periodic_callback(retry, period=UNAVAILABLE_RETRY_SECONDS * 1000)
    return template


def _attach_page(login: LoginSession) -> None:
    """Tie this page to the login session: when the session ends, the page reloads (to the login
    page) and its websocket is closed, so a page whose script ignores the reload stops too."""
    from bokeh.protocol.exceptions import ProtocolError
    from panel.io.state import set_curdoc
    from tornado.ioloop import IOLoop

    doc = pn.state.curdoc
    context = doc.session_context
    location = pn.state.location

    def reload() -> None:
        if location is not None:
            with set_curdoc(doc):
                location.reload = True

    def cut() -> None:
        try:
            session = context.server_context.application_context.get_session(context.id)
        except (ProtocolError, KeyError):
            return  # already gone
        # Bokeh keeps a session's websockets privately; closing them ends the page for good.
        for connection in list(session._subscribed_connections):
            connection._socket.close()

    def close() -> None:
        if context.destroyed:
            return
        doc.add_next_tick_callback(reload)
        IOLoop.current().call_later(CLOSE_DELAY_SECONDS, cut)

    login.attach_page(context.id, close)
    doc.on_session_destroyed(lambda _context: login.detach_page(context.id))


if __name__.startswith("bokeh"):  # served by `panel serve src/kpisheet_ui/app.py`
    if not logging.getLogger(USAGE_LOGGER).handlers:
        configure_usage_log(os.environ.get(USAGE_LOG_ENV) or None)
    create_app().servable()
