"""A page of the app as a program sees it: a websocket client speaking Bokeh's protocol.

Used by the tests of the running server (``tests/test_ui_serve.py``) and by the load benchmark
(``benchmarks/app_load.py``): it pulls a session's document once, finds the widgets by their CSS
classes, sends a ``PATCH-DOC`` that sets a widget's value as the browser would, and waits for the
server's patch of the table. It keeps no document of its own (it only follows the widgets'
options and values), so many of them cost one process little.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

# CSS classes of the app's table and widgets (kpisheet_ui.app).
TABLE = "kpi-tabelle"
WINDOW = "fenster"
AS_OF = "stichtag"
GROUPING = "entitaeten-gruppe"
ENTITIES = "entitaeten"
KPIS = "kpis"
WIDGETS = (WINDOW, AS_OF, GROUPING, ENTITIES, KPIS)
#: Seconds a new page may wait for the server to take its websocket (a busy server is slow).
OPEN_TIMEOUT = 300


def _objects(node: Any, found: dict[str, dict[str, Any]]) -> None:
    """Every model of a serialised Bokeh document, by id."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "id" in node:
            found[node["id"]] = node
        for value in node.values():
            _objects(value, found)
    elif isinstance(node, list):
        for value in node:
            _objects(value, found)


def _option_values(options: list[Any]) -> list[Any]:
    """The values of a widget's options (a list of values or of (value, label) pairs)."""
    return [option[0] if isinstance(option, list) else option for option in options]


@dataclass
class Widget:
    """A widget model of the page: its id, the attribute holding its value, its options."""

    id: str
    attribute: str
    options: list[Any]
    value: Any = None


@dataclass
class Page:
    """One page: a websocket speaking Bokeh's protocol to the server at ``url``."""

    url: str
    widgets: dict[str, Widget] = field(default_factory=dict)
    table_source: str = ""
    #: Every value the server sent for a widget (by CSS class), in the order it came.
    sent_values: dict[str, list[Any]] = field(default_factory=dict)
    #: Ids of every model the server has defined to the page (in the document or in a patch).
    known_models: set[str] = field(default_factory=set)
    #: Ids the server named in a patch before defining them to the page, in the order they came
    #: (a browser reports each as "reference ... isn't known" and drops the patch).
    unknown_references: list[str] = field(default_factory=list)

    async def open(self) -> None:
        """Connect (a new session), pull the document and find the widgets."""
        from bokeh.protocol import Protocol
        from bokeh.protocol.receiver import Receiver
        from bokeh.util.token import generate_jwt_token, generate_session_id
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        self.protocol = Protocol()
        self.receiver = Receiver(self.protocol)
        token = generate_jwt_token(generate_session_id())
        host = self.url.removeprefix("http://")
        request = HTTPRequest(
            f"ws://{host}/ws",
            headers={"Origin": self.url},
            connect_timeout=OPEN_TIMEOUT,
            request_timeout=OPEN_TIMEOUT,
        )
        self.socket = await websocket_connect(
            request, subprotocols=["bokeh", token], max_message_size=1024**3
        )
        await self._expect("ACK")
        await self._send(self.protocol.create("PULL-DOC-REQ"))
        reply = await self._expect("PULL-DOC-REPLY")
        models: dict[str, dict[str, Any]] = {}
        _objects(reply.content["doc"], models)
        self.known_models = set(models)
        self._find_widgets(models)
        # As the browser does once it has drawn the page: Panel treats the page as connected
        # from then on (its changes are held and sent together, as for a browser).
        ready = {"type": "event", "name": "document_ready", "values": {"type": "map"}}
        await self._send(
            self._patch({"kind": "MessageSent", "msg_type": "bokeh_event", "msg_data": ready})
        )
        # From now on one task reads the websocket (a wait for a patch may be given up without
        # leaving a message half read).
        self._patches: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read_patches())

    async def _read_patches(self) -> None:
        while True:
            message = await self._receive()
            if message.msgtype == "PATCH-DOC":
                self._patches.put_nowait(message)

    def _find_widgets(self, models: dict[str, dict[str, Any]]) -> None:
        for model in models.values():
            attributes = model.get("attributes", {})
            classes = attributes.get("css_classes") or []
            if TABLE in classes and "source" in attributes:
                self.table_source = attributes["source"]["id"]
            for css in WIDGETS:
                if css not in classes:
                    continue
                if "labels" in attributes:  # a radio button group: the value is an index
                    options = list(range(len(attributes["labels"])))
                    active = attributes.get("active")
                    self.widgets[css] = Widget(model["id"], "active", options, active)
                elif "options" in attributes:
                    options = _option_values(attributes["options"])
                    # The document leaves out a value at its default: none chosen, for a choice
                    # of many (else a change to "none" would look like one and send nothing).
                    multiple = model.get("name", "").endswith("MultiChoice")
                    value = attributes.get("value", [] if multiple else None)
                    self.widgets[css] = Widget(model["id"], "value", options, value)
        missing = {TABLE} - ({TABLE} if self.table_source else set())
        missing |= set(WIDGETS) - set(self.widgets)
        if missing:
            raise RuntimeError(f"the page lacks {sorted(missing)}")

    async def _send(self, message: Any) -> None:
        await message.send(_Writer(self.socket))

    async def _receive(self) -> Any:
        while True:
            fragment = await self.socket.read_message()
            if fragment is None:
                raise ConnectionError("the server closed the websocket")
            message = await self.receiver.consume(fragment)
            if message is not None:
                if message.msgtype == "PATCH-DOC":
                    self._check_references(message.content.get("events", []))
                    self._follow(message.content.get("events", []))
                return message

    def _check_references(self, node: Any) -> None:
        """Note the models a patch defines, and the references to models it has not defined,
        in the order a browser reads them (a definition comes with the model's first mention)."""
        if isinstance(node, dict):
            if node.get("type") == "bytes":  # its {"id": ...} names a binary buffer, not a model
                return
            if node.get("type") == "object" and "id" in node:
                self.known_models.add(node["id"])
            elif node.keys() == {"id"} and node["id"] not in self.known_models:
                self.unknown_references.append(node["id"])
            for value in node.values():
                self._check_references(value)
        elif isinstance(node, list):
            for value in node:
                self._check_references(value)

    def _follow(self, events: list[dict[str, Any]]) -> None:
        """Keep the widgets' options and values as the server changes them (as a page would)."""
        by_id = {widget.id: (css, widget) for css, widget in self.widgets.items()}
        for event in events:
            css, widget = by_id.get(event.get("model", {}).get("id", ""), ("", None))
            if widget is None or event.get("kind") != "ModelChanged":
                continue
            if event.get("attr") == "options":
                widget.options = _option_values(event["new"])
            elif event.get("attr") == widget.attribute:
                widget.value = event["new"]
                self.sent_values.setdefault(css, []).append(event["new"])

    async def _expect(self, kind: str) -> Any:
        while True:
            message = await self._receive()
            if message.msgtype == kind:
                return message
            if message.msgtype == "ERROR":
                raise RuntimeError(f"server error: {message.content}")

    async def change(self, css: str, new: Any) -> None:
        """Set a widget's value as the browser does (the server's answers come later)."""
        widget = self.widgets[css]
        widget.value = new
        event = {"kind": "ModelChanged", "model": {"id": widget.id}, "attr": widget.attribute}
        await self._send(self._patch({**event, "new": new}))

    @staticmethod
    def _patch(event: dict[str, Any]) -> Any:
        """A ``PATCH-DOC`` message with one event, as the browser sends it."""
        from bokeh.protocol.messages.patch_doc import patch_doc

        return patch_doc(patch_doc.create_header(), {}, {"events": [event]})

    async def table_update(self) -> dict[str, Any]:
        """The next patch from the server that changes the table (its content)."""
        while True:
            reply = await self._patches.get()
            if self.table_source in json.dumps(reply.content):
                return reply.content

    async def quiet(self, seconds: float) -> None:
        """Wait until the server has sent the page nothing for ``seconds``."""
        while True:
            try:
                await asyncio.wait_for(self._patches.get(), seconds)
            except TimeoutError:
                return

    def column(self, update: dict[str, Any], name: str) -> list[Any]:
        """A column of the table as a :meth:`table_update` sent it (``[]`` when it did not)."""
        for event in update.get("events", []):
            if (
                event.get("kind") != "ColumnDataChanged"
                or event["model"]["id"] != self.table_source
            ):
                continue
            entries = dict(event["data"]["entries"])
            values = entries.get(name, [])
            return list(values["array"] if isinstance(values, dict) else values)
        return []

    def close(self) -> None:
        self._reader.cancel()
        self.socket.close()


class _Writer:
    """What ``bokeh.protocol.message.Message.send`` writes to: a tornado websocket client."""

    def __init__(self, socket: Any) -> None:
        from tornado.locks import Lock

        self.socket = socket
        self.write_lock = Lock()

    async def write_message(self, message: Any, binary: bool = False, locked: bool = True) -> None:
        await self.socket.write_message(message, binary=binary)
