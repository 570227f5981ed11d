"""The docs keep up with the code: every hook documented and tested, every KPI field described,
and the examples of docs/kpi-definitions.md and docs/plugins.md run as written."""

from __future__ import annotations

import re
import shlex
import shutil
import textwrap
from inspect import getdoc, getmembers, isfunction
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpisheet import hookspecs
from kpisheet.cli import main
from kpisheet.constants import EntityAggregation, TimeAggregation, Unit
from kpisheet.definitions import FIELDS, SOURCE_FIELDS

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
TESTS = Path(__file__).resolve().parent
PLUGINS_DOC = DOCS / "plugins.md"
DEFINITIONS_DOC = DOCS / "kpi-definitions.md"

#: A fenced block with its info string, optionally preceded by ``<!-- file: PATH -->``.
BLOCK = re.compile(
    r"(?:<!-- file: (?P<file>\S+) -->\n)?```(?P<kind>\w*)\n(?P<body>.*?)```", re.DOTALL
)


def hooks() -> list[str]:
    """Names of every hook specified in kpisheet.hookspecs."""
    spec_marker = f"{hookspecs.PROJECT_NAME}_spec"
    return [
        name
        for name, function in getmembers(hookspecs, isfunction)
        if hasattr(function, spec_marker)
    ]


def headings(text: str) -> list[tuple[int, str]]:
    """``(line index, heading text)`` of the Markdown headings outside fenced code blocks."""
    found, fenced = [], False
    for index, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", line):
            found.append((index, line.lstrip("#").strip()))
    return found


def section(text: str, heading: str) -> str:
    """The text of a Markdown section, from its heading to the next heading of any level."""
    lines = text.splitlines()
    found = headings(text)
    starts = [index for index, (_, title) in enumerate(found) if title == heading]
    assert starts, f"no heading {heading!r}"
    start = found[starts[0]][0] + 1
    end = found[starts[0] + 1][0] if starts[0] + 1 < len(found) else len(lines)
    return "\n".join(lines[start:end]) + "\n"


def normalise(text: str) -> str:
    """Text with reStructuredText literals as Markdown ones and whitespace collapsed."""
    return " ".join(text.replace("``", "`").split())


def test_there_are_hooks() -> None:
    """The hook finder sees the hooks of kpisheet.hookspecs (so the tests below check something)."""
    assert "kpisheet_definition_paths" in hooks()


@pytest.mark.parametrize("hook", hooks())
def test_hook_is_documented(hook: str) -> None:
    """Every hook has a heading in docs/plugins.md whose section repeats the hook's docstring."""
    text = section(PLUGINS_DOC.read_text(encoding="utf-8"), hook)
    docstring = getdoc(getattr(hookspecs, hook))
    assert docstring
    for paragraph in docstring.split("\n\n"):
        assert normalise(paragraph) in normalise(text), paragraph


@pytest.mark.parametrize("hook", hooks())
def test_hook_is_tested(hook: str) -> None:
    """Every hook is named in at least one test module other than this one."""
    test_files = [path for path in TESTS.rglob("test_*.py") if path.name != "test_docs.py"]
    assert any(hook in path.read_text(encoding="utf-8") for path in test_files)


def test_every_field_and_word_is_documented() -> None:
    """docs/kpi-definitions.md has a section per KPI field and names every allowed value."""
    text = DEFINITIONS_DOC.read_text(encoding="utf-8")
    table = section(text, "Fields")
    titles = [title for _, title in headings(text)]
    for field in FIELDS:
        assert f"| `{field}` |" in table, field
        assert any(f"`{field}`" in title for title in titles), field
    for key in SOURCE_FIELDS:
        assert f"| `{key}` |" in section(text, "`source`"), key
    for vocabulary in (Unit, TimeAggregation, EntityAggregation):
        for word in vocabulary:
            assert f"`{word.value}`" in table, word


def run_console(block: str) -> None:
    """Run each ``$ kpisheet ...`` line of a console block and compare with the lines shown.

    A shown line ``...`` stands for any number of lines. A command whose output starts by
    counting problems must exit 1, any other command 0.
    """
    commands: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ kpisheet "):
            commands.append((line[len("$ kpisheet ") :], []))
        else:
            commands[-1][1].append(line)
    for command, shown in commands:
        result = CliRunner().invoke(main, shlex.split(command))
        failing = bool(shown) and re.match(r"\d+ problems? in ", shown[0]) is not None
        assert result.exit_code == (1 if failing else 0), result.output
        pattern = "".join(
            r"(?:.*\n)*?" if line == "..." else re.escape(line) + r"\n" for line in shown
        )
        assert re.fullmatch(pattern, result.output), f"$ kpisheet {command}\n{result.output}"


def test_add_a_kpi_in_five_minutes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worked example runs as written: its files validate, and every output is the one shown."""
    walkthrough = section(DEFINITIONS_DOC.read_text(encoding="utf-8"), "Add a KPI in five minutes")
    shutil.copytree(REPO / "kpi_definitions", tmp_path / "kpi_definitions")
    monkeypatch.chdir(tmp_path)
    steps = [
        match
        for match in BLOCK.finditer(walkthrough)
        if match["file"] or match["kind"] == "console"
    ]
    assert [bool(step["file"]) for step in steps] == [True, False, False, True, False]
    for step in steps:
        if step["file"]:
            (tmp_path / step["file"]).write_text(step["body"], encoding="utf-8")
        else:
            run_console(step["body"])


def test_plugin_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin of docs/plugins.md, built from its blocks, loads with the sheet as the doc shows."""
    blocks = {
        match["body"].splitlines()[0]: match["body"]
        for match in BLOCK.finditer(PLUGINS_DOC.read_text(encoding="utf-8"))
        if match["body"].strip()
    }
    for path in ("card_risk_kpis/__init__.py", "card_risk_kpis/kpi_definitions/chargebacks.yaml"):
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(blocks[f"# {path}"], encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    example = next(body for first, body in blocks.items() if first == "import kpisheet")
    namespace: dict[str, object] = {}
    exec(compile(textwrap.dedent(example), str(PLUGINS_DOC), "exec"), namespace)
    registry = namespace["registry"]
    assert len(registry) == 16
    assert len(registry.groups) == 4
    assert "OK: 16 KPIs in 4 groups." in PLUGINS_DOC.read_text(encoding="utf-8")


def test_sources_cite_only_documents_in_the_repository() -> None:
    """Docstrings and comments cite docs/*.md files and semantics sections that exist, and no
    outside specification."""
    cited: set[str] = set()
    sections: set[str] = set()
    for path in sorted((REPO / "src").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "SPEC §" not in text, f"{path.relative_to(REPO)} cites a document kpisheet lacks"
        cited.update(re.findall(r"docs/[\w.-]+\.md", text))
        sections.update(re.findall(r'docs/semantics\.md, "([^"]+)"', text))
    assert "docs/semantics.md" in cited
    assert sorted(name for name in cited if not (REPO / name).is_file()) == []
    semantics = {title for _, title in headings((DOCS / "semantics.md").read_text("utf-8"))}
    assert sections and sorted(sections - semantics) == []
