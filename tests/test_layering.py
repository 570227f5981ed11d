"""The layers hold: the library never imports the app, and the app uses only the library's
documented public API (``kpisheet.__all__``, and ``__all__`` of each module in
``kpisheet.PUBLIC_MODULES``). Read from the source with ``ast``."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import kpisheet

SOURCE = Path(__file__).resolve().parent.parent / "src"
LIBRARY = SOURCE / "kpisheet"
APP = SOURCE / "kpisheet_ui"


def _sources(root: Path) -> dict[str, str]:
    """Every Python file under ``root``: path relative to src → source."""
    return {
        str(path.relative_to(SOURCE)): path.read_text(encoding="utf-8")
        for path in sorted(root.rglob("*.py"))
    }


def _imports(where: str, source: str) -> Iterator[tuple[int, str, str | None]]:
    """Every import of a file, relative ones resolved: (line, module, imported name or None)."""
    parts = Path(where).with_suffix("").parts
    package = parts[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = list(package[: len(package) - (node.level - 1)])
                module = ".".join([*base, module] if module else base)
            for alias in node.names:
                yield node.lineno, module, alias.name


def _module_path(module: str) -> Path:
    base = SOURCE.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _is_module(name: str) -> bool:
    return _module_path(name).is_file()


def _declared(module: str) -> set[str] | None:
    """The ``__all__`` a module declares (``None`` when it declares none)."""
    names = getattr(importlib.import_module(module), "__all__", None)
    return None if names is None else set(names)


def _uses(where: str, source: str) -> Iterator[tuple[int, str, str]]:
    """What a file takes from the library: (line, module, name), name ``""`` for a module.
    Attributes of an imported library module (``charts.line_chart``) count too."""
    aliases: dict[str, str] = {}
    for line, module, name in _imports(where, source):
        if module.split(".")[0] != "kpisheet":
            continue
        if name is None:
            yield line, module, ""
            aliases["kpisheet"] = "kpisheet"
        elif _is_module(f"{module}.{name}"):
            yield line, f"{module}.{name}", ""
            aliases[name] = f"{module}.{name}"
        else:
            yield line, module, name
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            module = aliases[node.value.id]
            if _is_module(f"{module}.{node.attr}"):
                yield node.lineno, f"{module}.{node.attr}", ""
            else:
                yield node.lineno, module, node.attr


def library_offenders(files: dict[str, str]) -> list[str]:
    """Imports of kpisheet_ui in files of the library."""
    return [
        f"{where}:{line}: imports {module}"
        for where, source in files.items()
        for line, module, _ in _imports(where, source)
        if module.split(".")[0] == "kpisheet_ui"
    ]


def app_offenders(files: dict[str, str]) -> list[str]:
    """Uses of private names or modules of the library in files of the app."""
    public = {"kpisheet", *kpisheet.PUBLIC_MODULES}
    offenders = []
    for where, source in files.items():
        for line, module, name in _uses(where, source):
            if module not in public:
                offenders.append(f"{where}:{line}: {module} is not a public module")
            elif name:
                declared = set(kpisheet.__all__) if module == "kpisheet" else _declared(module)
                if name.startswith("_") or (declared is not None and name not in declared):
                    offenders.append(f"{where}:{line}: {module}.{name} is not public")
    return offenders


def test_the_library_never_imports_the_app() -> None:
    """No module under src/kpisheet imports kpisheet_ui (the app builds on the library only)."""
    assert library_offenders(_sources(LIBRARY)) == []


def test_the_app_uses_only_the_documented_public_api() -> None:
    """kpisheet_ui imports no private name (``_x``), no module outside kpisheet.PUBLIC_MODULES,
    and from each public module only names of its ``__all__``."""
    assert app_offenders(_sources(APP)) == []


def test_every_public_module_declares_its_api() -> None:
    """Each module of kpisheet.PUBLIC_MODULES lists its public names in ``__all__``, and every
    listed name exists (a typo in ``__all__`` would hide a missing name)."""
    modules = list(kpisheet.PUBLIC_MODULES)
    assert [module for module in modules if _declared(module) is None] == []
    for module in modules:
        imported = importlib.import_module(module)
        missing = sorted(name for name in _declared(module) or () if not hasattr(imported, name))
        assert missing == [], module
    # the package's own names too (the store's are imported on first use)
    assert sorted(name for name in kpisheet.__all__ if not hasattr(kpisheet, name)) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "from kpisheet.charts import _bokeh_look\n",
            "kpisheet_ui/probe.py:1: kpisheet.charts._bokeh_look is not public",
        ),
        (
            "from kpisheet import engine\n",
            "kpisheet_ui/probe.py:1: kpisheet.engine is not a public module",
        ),
        (
            "from kpisheet import charts\n\ncharts._chart_frame(None, None)\n",
            "kpisheet_ui/probe.py:3: kpisheet.charts._chart_frame is not public",
        ),
        (
            "from kpisheet.export import ReleaseLike, _labels\n",
            "kpisheet_ui/probe.py:1: kpisheet.export._labels is not public",
        ),
        (
            "import kpisheet\n\nkpisheet.sheet.KPISheet\n",
            "kpisheet_ui/probe.py:3: kpisheet.sheet is not a public module",
        ),
    ],
)
def test_the_app_check_catches_a_private_reach(source: str, expected: str) -> None:
    """The check is not blind: an app file that reaches a private name or module is reported."""
    assert app_offenders({"kpisheet_ui/probe.py": source}) == [expected]


def test_the_library_check_catches_an_import_of_the_app() -> None:
    """The check is not blind: a library file importing the app, even relatively, is reported."""
    files = {
        "kpisheet/probe.py": "import kpisheet_ui.app\n",
        "kpisheet/other.py": "def f():\n    from kpisheet_ui import serve\n",
    }
    assert library_offenders(files) == [
        "kpisheet/probe.py:1: imports kpisheet_ui.app",
        "kpisheet/other.py:2: imports kpisheet_ui",
    ]


def test_the_package_docstring_names_every_public_module() -> None:
    """``kpisheet``'s docstring, where a reader looks first, names each module of
    PUBLIC_MODULES, so the documented API and the checked one are the same."""
    doc = kpisheet.__doc__ or ""
    named = set(re.findall(r"``(kpisheet\.[a-z_.]+)``", doc))
    assert sorted(set(kpisheet.PUBLIC_MODULES) - named) == []
