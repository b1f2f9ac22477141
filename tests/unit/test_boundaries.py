"""ivt_core never imports gradio; training never imports ui."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules(package):
    return [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / package).rglob("*.py")]


def test_ivt_core_never_imports_gradio():
    code = (
        "import importlib, sys\n"
        f"for name in {_modules('ivt_core')!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = [m for m in sys.modules if m == 'gradio' or m.startswith('gradio.')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_source_mentions_ui_from_core_or_training():
    for package in ("ivt_core", "training"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            assert "import gradio" not in text and "from ui" not in text and "import ui" not in text, path
