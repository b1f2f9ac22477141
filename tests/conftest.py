import os

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
