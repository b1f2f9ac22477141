import importlib
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture
def workspace(tmp_path):
    from ivt_core.workspace import Workspace

    return Workspace.open(tmp_path / "ws")


@pytest.fixture
def db(workspace):
    connection = workspace.connect()
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def benchmark_module():
    """Import a script of ``benchmarks/`` by name (they import their neighbours, e.g. ``known_scenes``)."""
    path = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, path)
    yield importlib.import_module
    sys.path.remove(path)
