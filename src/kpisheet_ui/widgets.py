"""Panel widgets for the page: text from data shown as text, and no stale value sent back.

Bokeh's ``MultiChoice`` renders its options with Choices.js, which writes labels with
``innerHTML``; :class:`TextMultiChoice` sends each option as a (value, label) pair whose label is
HTML-escaped, so an entity called ``<img src=x onerror=alert(1)>`` is shown, not run. The value
stays the plain label, so selections and search work on the text as written.

A page's work runs on a thread (``kpisheet serve --num-threads``), and Panel sends a widget's
new value to the browser from the event loop once that work is done. When the browser sent the
value itself, that echo is at best useless and at worst harmful: if the visitor picked again in
the meantime, the browser is sent back an older value and shows it, while the table follows the
newer one (a pick seems to vanish). Panel drops the echo only when it is the very object the
browser sent; choice widgets translate labels, so it is an equal copy. :class:`EchoFree` drops
equal copies too. A value the app itself changes (a selection dropped with a new grouping) still
goes to the browser. (The other way an old value came back, Bokeh replaying the browser's own
change after a hold, is closed in :func:`kpisheet_ui.serve.no_replayed_echoes`.)
"""

from __future__ import annotations

from typing import Any

import panel as pn

from kpisheet_ui.escape import html_text


class EchoFree:
    """Mixin for a Panel widget: a value the browser just sent is not sent back to it."""

    _in_process__events: dict[Any, dict[str, Any]]

    def _update_model(
        self, events: Any, msg: dict[str, Any], root: Any, model: Any, doc: Any, comm: Any
    ) -> None:
        sent = self._in_process__events.get(doc, {})
        for attr in [attr for attr in msg if attr in sent]:
            if _same(msg[attr], sent[attr]):
                del msg[attr]
        super()._update_model(events, msg, root, model, doc, comm)  # type: ignore[misc]


def _same(ours: Any, theirs: Any) -> bool:
    try:
        return bool(ours == theirs)
    except (TypeError, ValueError):  # values without a plain equality
        return ours is theirs


class Select(EchoFree, pn.widgets.Select):
    """A ``Select`` that sends no echo of the browser's own choice."""


class RadioButtonGroup(EchoFree, pn.widgets.RadioButtonGroup):
    """A ``RadioButtonGroup`` that sends no echo of the browser's own choice."""


class TextMultiChoice(EchoFree, pn.widgets.MultiChoice):
    """A ``MultiChoice`` whose option labels are text, never markup, and that sends no echo."""

    def _process_param_change(self, params: dict[str, Any]) -> dict[str, Any]:
        props = super()._process_param_change(params)
        if "options" in props:
            props["options"] = [(label, html_text(label)) for label in props["options"]]
        return props
