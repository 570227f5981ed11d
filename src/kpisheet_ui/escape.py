"""Text from data shown as text: escaping for the HTML and Markdown the app's panes render.

Entity names, KPI labels and ids, groups, descriptions, release notes and user names come from
files other people write. Every place that hands such text to something that renders markup (an
HTML or Markdown pane, a Choices.js option, a Tabulator group header) passes it through one of
these functions first, so ``<img src=x onerror=alert(1)>`` shows as those characters.
"""

from __future__ import annotations

import html
import re

import pandas as pd

#: Characters that make Markdown markup (emphasis, code, links, images, headings, lists, tables);
#: a backslash before each makes it literal. ``.`` only makes markup after digits at the start
#: of a line (an ordered list): :data:`_ORDERED_LIST` escapes it there.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-!|~])")
_ORDERED_LIST = re.compile(r"^(\s*\d+)\.", flags=re.MULTILINE)


def html_text(text: object) -> str:
    """``text`` as HTML text: ``& < > " '`` escaped."""
    return html.escape(str(text), quote=True)


def markdown_text(text: object) -> str:
    """``text`` as literal Markdown: Markdown punctuation backslash-escaped, then HTML-escaped.

    Neither a link, an emphasis, a heading nor inline HTML survives; the reader sees the
    characters as they were written.
    """
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))
    return html_text(_ORDERED_LIST.sub(r"\1\\.", escaped))


#: What :func:`html_text` replaces (``html.escape`` with ``quote=True``), the ampersand first.
_HTML_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&#x27;"))


def html_column(values: pd.Series) -> pd.Series:
    """A column of text as HTML text, as :func:`html_text` escapes each value: replaced for the
    whole column at once (Arrow's string kernels), not one Python call per row."""
    escaped = values.astype("str")
    for character, entity in _HTML_ESCAPES:
        escaped = escaped.str.replace(character, entity, regex=False)
    return escaped


def html_options(options: dict[str, str]) -> dict[str, str]:
    """Options of a Choices.js multi-select (label → value) with HTML-escaped labels.

    Choices.js (Bokeh's and Panel's ``MultiChoice``) writes labels with ``innerHTML``.
    """
    return {html_text(label): value for label, value in options.items()}
