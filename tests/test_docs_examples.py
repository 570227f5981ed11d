"""The examples in docs/analysts.md run as written, so the guide cannot rot."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpisheet.cli import main

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "analysts.md"
BLOCK = re.compile(r"```(python|console)\n(.*?)```", re.DOTALL)


def _blocks(kind: str) -> list[str]:
    return [
        body
        for block_kind, body in BLOCK.findall(GUIDE.read_text(encoding="utf-8"))
        if block_kind == kind
    ]


def test_python_examples_run() -> None:
    """Every Python block of the guide runs, in order, in one namespace, and its asserts hold."""
    blocks = _blocks("python")
    assert len(blocks) >= 5
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(GUIDE), "exec"), namespace)


def _commands() -> list[tuple[list[str], list[str]]]:
    commands = []
    for block in _blocks("console"):
        for line in block.splitlines():
            if line.startswith("$ kpisheet "):
                commands.append((shlex.split(line[len("$ kpisheet ") :]), []))
            elif commands and line.strip():
                commands[-1][1].append(line)
    return commands


@pytest.mark.parametrize(
    ("args", "shown"), _commands(), ids=lambda value: " ".join(value) if value else ""
)
def test_console_examples_run(args: list[str], shown: list[str]) -> None:
    """Every command of the guide exits 0 and prints the lines the guide shows first."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[: len(shown)] == shown
