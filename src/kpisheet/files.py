"""Reading the project's files: paths as users read them, YAML documents with line numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kpisheet.errors import Problem


def display_path(path: Path) -> str:
    """A path as users should read it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_yaml(path: Path, file: str) -> tuple[Any, yaml.Node | None, Problem | None]:
    """One YAML document: its data, its node tree (for line numbers) or the problem reading it.

    ``file`` is the name problems give the file. An empty file gives ``(None, None, None)``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, None, Problem(f"cannot read file: {exc}", file=file)
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{context}, {problem}" if context else problem
        return None, None, Problem(f"YAML syntax error: {detail}", file=file, line=line)
    return data, node, None
