"""Reading the project's files: paths as users read them, YAML documents with line numbers.

YAML is read within limits, so that a hostile or broken file is refused quickly with a message
instead of exhausting memory or the interpreter's stack: a size per file, a nesting depth, and a
cap on what aliases expand to (the "billion laughs" file, nine aliases of nine aliases, would
expand to 387 million values).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from kpisheet.errors import Problem

if TYPE_CHECKING:
    from yaml._yaml import Mark as _LibyamlMark

#: Bytes a YAML file (KPI definitions, entity hierarchy, ingest configuration) may have.
MAX_YAML_BYTES = 10 * 2**20
#: Levels a YAML document may nest (a KPI file needs 3, a hierarchy 3).
MAX_YAML_DEPTH = 50
#: Values a YAML document may hold once its aliases are expanded.
MAX_YAML_VALUES = 1_000_000


def display_path(path: Path) -> str:
    """A path as users should read it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class _LimitExceeded(yaml.YAMLError):
    """A limit of :func:`read_yaml` was exceeded at ``mark``."""

    def __init__(self, message: str, mark: yaml.Mark | _LibyamlMark | None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _DepthLimit(yaml.composer.Composer):
    """PyYAML's composer, refusing documents nested deeper than :data:`MAX_YAML_DEPTH`.

    The check runs while the document is composed (PyYAML composes recursively, so a deep file
    would otherwise end in a RecursionError).
    """

    _depth = 0
    has_aliases = False

    if TYPE_CHECKING:  # supplied by the parser and the constructor the composer is mixed with

        def check_event(self, *choices: Any) -> bool: ...
        def peek_event(self) -> yaml.Event | None: ...
        def construct_document(self, node: yaml.Node) -> Any: ...
        def dispose(self) -> None: ...

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.has_aliases = True
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                event = self.peek_event()
                raise _LimitExceeded(
                    f"nested more than {MAX_YAML_DEPTH} levels deep",
                    event.start_mark if event is not None else None,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _BoundedLoader(_DepthLimit, yaml.SafeLoader):
    """PyYAML's safe loader in Python, with the depth limit; its messages are the ones quoted."""


if yaml.__with_libyaml__:  # PyYAML built with libyaml
    from yaml._yaml import CParser as _CParser

    class _FastBoundedLoader(
        _CParser,  # libyaml's parser and composer: both in C, several times faster
        yaml.constructor.SafeConstructor,
        yaml.resolver.Resolver,
    ):
        """:class:`_BoundedLoader` in C (where PyYAML was built with libyaml). libyaml's composer
        has no depth limit and recurses in C, so the depth is checked on the document's events
        first (:func:`_event_limits`), before any node is composed."""

        def __init__(self, stream: str) -> None:
            self.has_aliases = _event_limits(stream)
            _CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

        def dispose(self) -> None:
            """Nothing to release (libyaml's parser is freed with the object)."""

    def _event_limits(text: str) -> bool:
        """Whether a document has aliases; raises :class:`_LimitExceeded` where it nests deeper
        than :data:`MAX_YAML_DEPTH`, counted as :class:`_DepthLimit` counts (a node inside
        ``n`` collections is at depth ``n + 1``), on libyaml's events without composing."""
        parser = _CParser(text)
        depth, aliases = 0, False
        while not parser.check_event(yaml.StreamEndEvent):
            event = parser.get_event()
            if isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.NodeEvent):  # a scalar, an alias or a collection
                if depth + 1 > MAX_YAML_DEPTH:
                    raise _LimitExceeded(
                        f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark
                    )
                aliases = aliases or isinstance(event, yaml.AliasEvent)
                depth += isinstance(event, yaml.CollectionStartEvent)
        return aliases


class _Loader(Protocol):
    """What :func:`_read_document` needs of a loader (the Python one or the libyaml one)."""

    has_aliases: bool

    def get_single_node(self) -> yaml.Node | None: ...
    def construct_document(self, node: yaml.Node) -> Any: ...
    def dispose(self) -> None: ...


def _expansion_problem(root: yaml.Node) -> _LimitExceeded | None:
    """Why the document's aliases expand too far (values or depth), or ``None``.

    Counts each node once with memoisation, so the count itself is linear in the file.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in children)
            depth[key] = 1 + max((depth[id(child)] for child in children), default=0)
            if size[key] > MAX_YAML_VALUES:
                return _LimitExceeded(
                    f"aliases expand to more than {MAX_YAML_VALUES:,} values", node.start_mark
                )
            if depth[key] > MAX_YAML_DEPTH:
                return _LimitExceeded(
                    f"aliases nest more than {MAX_YAML_DEPTH} levels deep", node.start_mark
                )
            continue
        if key in size:
            continue
        if key in on_path:
            return _LimitExceeded("an alias refers to a value that contains it", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in size)
    return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def read_text(path: Path, file: str) -> tuple[str | None, Problem | None]:
    """The text of a configuration file (UTF-8) of at most :data:`MAX_YAML_BYTES`, or the problem."""
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            message = (
                f"file is {size:,} bytes; a configuration file may have at most {MAX_YAML_BYTES:,}"
            )
            return None, Problem(message, file=file)
        return path.read_text(encoding="utf-8"), None
    except (OSError, UnicodeDecodeError) as exc:
        return None, Problem(f"cannot read file: {exc}", file=file)


def read_yaml(path: Path, file: str) -> tuple[Any, yaml.Node | None, Problem | None]:
    """One YAML document: its data, its node tree (for line numbers) or the problem reading it.

    ``file`` is the name problems give the file. An empty file gives ``(None, None, None)``.
    A file over :data:`MAX_YAML_BYTES`, nested deeper than :data:`MAX_YAML_DEPTH` or with
    aliases that expand beyond :data:`MAX_YAML_VALUES` values is a problem, found without
    building the expanded data.
    """
    text, problem = read_text(path, file)
    if text is None:
        return None, None, problem
    if yaml.__with_libyaml__:
        try:
            return _read_document(_FastBoundedLoader(text))
        except (yaml.YAMLError, RecursionError, ValueError):
            pass  # read again in Python, whose messages the problems quote
    try:
        return _read_document(_BoundedLoader(text))
    except _LimitExceeded as exc:
        line = exc.mark.line + 1 if exc.mark is not None else None
        return None, None, Problem(f"YAML refused: {exc.message}", file=file, line=line)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem_text = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{context}, {problem_text}" if context else problem_text
        return None, None, Problem(f"YAML syntax error: {detail}", file=file, line=line)


def _read_document(loader: _Loader) -> tuple[Any, yaml.Node | None, None]:
    """The data and node tree of the loader's one document; raises what reading it raises."""
    try:
        node = loader.get_single_node()
        limit = _expansion_problem(node) if node is not None and loader.has_aliases else None
        if limit is not None:
            raise limit
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node, None


def node_line(node: yaml.Node | None) -> int | None:
    """Line (1-based) where a YAML node starts; ``None`` without a node (e.g. data not from YAML)."""
    return node.start_mark.line + 1 if node is not None else None


def mapping_nodes(node: yaml.Node | None) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """Key and value node of each key of a YAML mapping (its last occurrence, as the data holds)."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(key.value): (key, value) for key, value in node.value}


def key_lines(node: yaml.Node | None) -> dict[str, int]:
    """Line of each key of a YAML mapping (its last occurrence, whose value the data holds)."""
    return {key: key_node.start_mark.line + 1 for key, (key_node, _) in mapping_nodes(node).items()}


def repeated_keys(node: yaml.Node | None) -> list[tuple[str, int, int]]:
    """Keys a YAML mapping repeats (YAML keeps only the last): ``(key, first line, line)`` each time."""
    if not isinstance(node, yaml.MappingNode):
        return []
    first: dict[str, int] = {}
    repeated = []
    for key_node, _ in node.value:
        key, line = str(key_node.value).strip(), key_node.start_mark.line + 1
        if key in first:
            repeated.append((key, first[key], line))
        first.setdefault(key, line)
    return repeated


def node_at(node: yaml.Node | None, loc: Sequence[str | int]) -> yaml.Node | None:
    """The YAML node at a location (mapping keys, list positions), or the deepest one on the way.

    For a mapping key the key's node is given, so a message points at the line naming it.
    """
    for depth, part in enumerate(loc, start=1):
        if isinstance(node, yaml.MappingNode):
            pair = mapping_nodes(node).get(str(part))
            if pair is None:
                return node
            key_node, value = pair
            if depth == len(loc):
                return key_node
            node = value
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            return node
    return node
