"""Panel widgets that show text from data as text.

Bokeh's ``MultiChoice`` renders its options with Choices.js, which writes labels with
``innerHTML``; :class:`TextMultiChoice` sends each option as a (value, label) pair whose label is
HTML-escaped, so an entity called ``<img src=x onerror=alert(1)>`` is shown, not run. The value
stays the plain label, so selections and search work on the text as written.
"""

from __future__ import annotations

from typing import Any

import panel as pn

from kpisheet_ui.escape import html_text


class TextMultiChoice(pn.widgets.MultiChoice):
    """A ``MultiChoice`` whose option labels are text, never markup."""

    def _process_param_change(self, params: dict[str, Any]) -> dict[str, Any]:
        props = super()._process_param_change(params)
        if "options" in props:
            props["options"] = [(label, html_text(label)) for label in props["options"]]
        return props
