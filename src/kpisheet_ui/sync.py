"""A page is sent every model the server names to it.

A change of the page's document goes to the browser as a PATCH-DOC message. The message defines
a new model (a new chart's figure, axes, glyphs and style sheets) in full only while the document
counts it as *new*; once a message has defined it, later messages name it by id alone. In two
places Bokeh stopped counting models as new although no message had defined them:

- when it applied a change from the browser (a pick of entities), every model of the document
  stopped being new, as if the browser had sent them all;
- when it sent the whole document to a page that opened, every model stopped being new,
  including those that were in the document's list of models but not among the models it sent.

Without threads both happened only after the new models' messages had been made. With
``--num-threads``, a page's work runs on a thread while its document is held, and its changes
are sent when the hold ends: a pick of entities that arrived meanwhile made the new chart's
models count as sent. The next message named them by id, and the browser reported "reference
... isn't known" and dropped the change: the chart of a quick pick stayed blank, most often on
a loaded machine.

:func:`only_sent_models_synced` keeps a model new until a message to the page has defined it.
``kpisheet serve`` applies it before it starts.
"""

from __future__ import annotations

import functools
from typing import Any

#: Marks Bokeh's methods once they are wrapped.
WRAPPED = "_kpisheet_only_sent_models_synced"


def only_sent_models_synced() -> None:
    """Wrap ``Document.apply_json_patch`` and ``Document.to_json``: models that were new before
    and that the browser did not send or was not sent stay new. Idempotent."""
    from bokeh.document import Document

    if getattr(Document.to_json, WRAPPED, False):
        return
    apply_json_patch = Document.apply_json_patch
    to_json = Document.to_json

    @functools.wraps(apply_json_patch)
    def applied(document: Document, patch_json: Any, setter: Any = None) -> None:
        # The browser can only name models it was sent; those it made itself are not new ones
        # of the server's, so the ones new before stay new.
        new = set(document.models._new_models)
        apply_json_patch(document, patch_json, setter=setter)
        _keep_new(document, new)

    @functools.wraps(to_json)
    def serialised(document: Document, *args: Any, **kwargs: Any) -> Any:
        new = set(document.models._new_models)
        result = to_json(document, *args, **kwargs)
        if new:
            content = getattr(result, "content", result)  # ``Serialized`` unless not deferred
            sent = _defined(content)
            _keep_new(document, {model for model in new if model.id not in sent})
        return result

    for wrapped in (applied, serialised):
        setattr(wrapped, WRAPPED, True)
    Document.apply_json_patch = applied  # type: ignore[method-assign,assignment]
    Document.to_json = serialised  # type: ignore[method-assign,assignment]


def _keep_new(document: Any, models: set[Any]) -> None:
    """Count those of ``models`` that are still in ``document`` as new again."""
    models_now = document.models
    still_there = {model for model in models if models_now.get_by_id(model.id) is model}
    models_now._new_models |= still_there


def _defined(node: Any) -> set[str]:
    """Ids of the models ``node`` (a serialised document) defines, not only names."""
    into: set[str] = set()
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "object" and "id" in node:
                into.add(node["id"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return into
