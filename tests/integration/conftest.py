import pytest

FAMILIES = ["qwen3_vl", "qwen2_5_vl", "qwen2_vl"]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """One tiny random checkpoint per family, built offline once per test session."""
    from ivt_core.tinykit import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_model(root / family, family) for family in FAMILIES}


@pytest.fixture
def shapes_ws(workspace):
    from ivt_core.data.shapes_split import write_shapes_split

    write_shapes_split(workspace, "test", 6, seed=0)
    return workspace
