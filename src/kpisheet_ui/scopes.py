"""Per-user entity scopes: which entities of the sheet a user of the app may see.

A scope is ``LEVEL=NAME``: a hierarchy level or view (an attribute of the products, such as
``mandant``, ``sector`` or ``cardprofile``) and one of its groups, or ``product=NAME`` for one
product. A user with several scopes sees their union. The products in scope decide everything
else: an entity is visible when *all* its products are in scope, so a scoped user sees their
products and every group wholly inside the scope, but never the total, a sector or a view group
whose figure includes products outside it.

:class:`ScopedSheetState` enforces this on the server: the choices offered, the entities of
every query and chart series, and every download come from the visible entities only, and a
selection of another entity (e.g. a widget value set by hand over the websocket) is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pandas as pd
import param

from kpisheet.constants import PRODUCT_LEVEL, TOTAL_LEVEL
from kpisheet.hierarchy import Hierarchy
from kpisheet_ui.state import SheetState
from kpisheet_ui.users import AuthError

log = logging.getLogger(__name__)

SEPARATOR = "="


def parse_scope(text: str) -> str:
    """A scope ``LEVEL=NAME`` normalised (spaces around both parts removed).

    :raises AuthError: when ``text`` is not ``LEVEL=NAME`` with both parts non-empty.
    """
    key, separator, value = text.partition(SEPARATOR)
    key, value = key.strip(), value.strip()
    if not separator or not key or not value:
        raise AuthError(f"scope {text!r} is not LEVEL=NAME (e.g. mandant=Alpine or sector=B2C)")
    return f"{key}{SEPARATOR}{value}"


def scope_products(hierarchy: Hierarchy, scopes: Iterable[str]) -> pd.Index:
    """The products inside any of the scopes (a scope naming nothing adds nothing)."""
    attributes = hierarchy.attributes
    inside = pd.Series(False, index=attributes.index)
    for scope in scopes:
        key, _, value = scope.partition(SEPARATOR)
        if key == TOTAL_LEVEL:
            inside |= value == hierarchy.total
        elif key == PRODUCT_LEVEL:
            inside |= attributes.index == value
        elif key in attributes.columns:
            inside |= attributes[key].astype(str) == value
    return attributes.index[inside.to_numpy()]


def visible_entities(hierarchy: Hierarchy, scopes: Iterable[str]) -> frozenset[str]:
    """The entities whose products all lie inside the scopes: products, groups, views, total."""
    attributes = hierarchy.attributes
    products = scope_products(hierarchy, scopes)
    inside = pd.Series(attributes.index.isin(products), index=attributes.index)
    visible = set(products)
    for column in attributes.columns:
        groups = attributes[column].astype(str)
        wholly = inside.groupby(groups.to_numpy()).all()
        visible |= {group for group in wholly.index[wholly.to_numpy()] if group != ""}
    if len(products) and inside.all():
        visible.add(hierarchy.total)
    return frozenset(visible)


def unknown_scopes(hierarchy: Hierarchy, scopes: Iterable[str]) -> list[str]:
    """The scopes that name no product of the hierarchy (reported when the server starts)."""
    return [scope for scope in scopes if not len(scope_products(hierarchy, [scope]))]


class ScopedSheetState(SheetState):
    """A :class:`SheetState` that shows only the entities visible to a user's scopes."""

    def __init__(self, sheet: Any, *, scopes: Iterable[str], **params: Any) -> None:
        self._scopes = tuple(scopes)
        self._visible_cache: tuple[Any, frozenset[str]] | None = None
        super().__init__(sheet, **params)

    @property
    def visible(self) -> frozenset[str]:
        """The entities this user may see in the current sheet."""
        if self._visible_cache is None or self._visible_cache[0] is not self.sheet:
            self._visible_cache = (
                self.sheet,
                visible_entities(self.sheet.hierarchy, self._scopes),
            )
        return self._visible_cache[1]

    def grouping_options(self) -> dict[str, str]:
        """The groupings with at least one visible entity; a group itself must be visible."""
        options = {}
        for label, key in super().grouping_options().items():
            _, _, name = key.partition(":")
            if ":" in key and not key.startswith("view:") and name not in self.visible:
                continue
            if self._visible_only(super().grouping_entities(key)):
                options[label] = key
        return options

    def grouping_entities(self, key: str | None = None) -> list[str]:
        """The visible entities of a grouping."""
        return self._visible_only(super().grouping_entities(key))

    @property
    def selected_entities(self) -> list[str]:
        """The visible entities shown (never another: the last guard before every query)."""
        return self._visible_only(self.entities) or self.grouping_entities()

    def _selection_changed(self, *events: param.parameterized.Event) -> None:
        outside = [entity for entity in self.entities if entity not in self.visible]
        if outside:
            log.warning("user %r: refused entities outside their scopes: %r", self.user, outside)
            with param.parameterized.discard_events(self):
                self.entities = self._visible_only(self.entities)
        super()._selection_changed(*events)

    def query_arguments(self) -> dict[str, Any]:
        """The query behind the table; refuses to run without a visible entity."""
        arguments = super().query_arguments()
        if not arguments["entities"]:
            raise AuthError("no entity of this sheet lies inside the user's scopes")
        return arguments

    def _visible_only(self, entities: Iterable[str]) -> list[str]:
        visible = self.visible
        return [entity for entity in entities if entity in visible]
