"""Dependencies point one way: ui -> ivt_core <- training, and the CLI sits above the engine.

- the engine (``ivt_core`` outside ``ivt_core/cli``) never imports gradio, ``training`` or the CLI, not even
  inside a function;
- ``ivt_core`` and ``training`` never import ``ui``;
- SQL lives in ``ivt_core/store`` only.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = [p for p in (ROOT / "ivt_core").rglob("*.py") if "cli" not in p.relative_to(ROOT / "ivt_core").parts]
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|"
                 r"ALTER\s+TABLE|DROP\s+TABLE)\b", re.IGNORECASE | re.DOTALL)


def _modules(package):
    paths = (ROOT / package).rglob("*.py")
    return [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in paths if p.name != "__main__.py"]


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            first = node.args[0]
            names.add(first.value if isinstance(first, ast.Constant) else "<dynamic>")
    return names


def test_ivt_core_never_imports_gradio():
    code = (
        "import importlib, sys\n"
        f"for name in {_modules('ivt_core')!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = [m for m in sys.modules if m == 'gradio' or m.startswith('gradio.') or m.startswith('training')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("path", ENGINE, ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_never_imports_gradio_training_or_the_cli(path):
    bad = {name for name in _imported(path) if name.split(".")[0] in ("gradio", "training", "ui")
           or name.startswith("ivt_core.cli") or name == "<dynamic>"}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_no_source_mentions_ui_from_core_or_training():
    for package in ("ivt_core", "training"):
        for path in (ROOT / package).rglob("*.py"):
            assert not {n for n in _imported(path) if n.split(".")[0] in ("ui", "gradio")}, path


def test_sql_lives_in_the_store():
    found = []
    for path in (ROOT / "ivt_core").rglob("*.py"):
        if "store" in path.relative_to(ROOT / "ivt_core").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"SQL outside ivt_core/store: {found}"


def test_the_sql_check_sees_sql():
    assert SQL.search("SELECT id FROM jobs") and SQL.search("update jobs set pid = 1") and not SQL.search(
        "select a model, then update the form")
