"""Reports and comparisons over stored runs (scripted grounders: exact, known numbers)."""

import json

import pytest

from ivt_core.cli import main
from ivt_core.errors import InvalidInputError
from ivt_core.evaluate import EvalRequest, evaluate
from ivt_core.loop import LoopConfig
from ivt_core.report import build_report, compare_runs, report_html
from tests.fakes import ScriptedGrounder

WHOLE = "[0, 0, 1000, 1000]"


def _run(workspace, answer, steps=1):
    grounder = ScriptedGrounder(answer, with_conversation=True)
    return evaluate(workspace, grounder, "/m", EvalRequest("shapes", "test", LoopConfig(steps=steps)))


@pytest.fixture
def runs(shapes_ws):
    from ivt_core.data.sample import load_image
    from ivt_core.store.samples import get_samples

    samples = get_samples(shapes_ws.connect(), "shapes", "test")
    gt = {load_image(shapes_ws.resolve(s.image_path)).tobytes(): s.bbox for s in samples}

    def exact(text, step, conversation):  # step 0 exact, step 1 unparsable: a collapse
        box = gt[conversation[0]["content"][0]["image"].tobytes()]
        return f"[{box.x1 / 0.224}, {box.y1 / 0.224}, {box.x2 / 0.224}, {box.y2 / 0.224}]" if step == 0 else "??"

    a = _run(shapes_ws, exact).run_id
    b = _run(shapes_ws, lambda t, s, c: WHOLE).run_id
    return shapes_ws, a, b


def test_report_numbers(runs):
    workspace, a, _ = runs
    report = build_report(workspace.connect(), a)
    m = report["metrics"]
    assert m["step0"]["acc@0.9"] == 1.0 and m["final"]["acc@0.5"] == 0.0
    assert m["oracle"]["acc@0.9"] == 1.0 and m["parse_failure_rate"] == 0.5
    assert m["outcomes"]["degraded"] == 1.0 and m["degradation"] == pytest.approx(1.0)
    assert set(report["by_source"]) == {"shapes"} and report["by_expression_type"]


def test_report_html_is_self_contained(runs):
    workspace, a, _ = runs
    page = report_html(build_report(workspace.connect(), a))
    assert "oracle (uses ground truth)" in page and "Plotly.newPlot" in page and 'src="http' not in page


def test_compare_wins_and_losses(runs):
    workspace, a, b = runs
    result = compare_runs(workspace.connect(), [a, b])
    step0 = next(p for p in result["pairs"] if p["at"] == "step0")
    final = next(p for p in result["pairs"] if p["at"] == "final")
    # whole-image boxes overlap the target by its area share: > 0.05 for 3 of the 6 scenes
    assert result["samples"] == 6 and step0["losses"] == 6 and (final["wins"], final["losses"]) == (3, 0)
    assert result["runs"][1]["delta"]["step0"]["acc@0.5"] == -1.0


def test_compare_needs_common_samples(runs):
    workspace, a, _ = runs
    with pytest.raises(InvalidInputError):
        compare_runs(workspace.connect(), [a])


def test_cli_report_json_and_html(runs, tmp_path, capsys):
    workspace, a, b = runs
    assert main(["report", str(a), "--workspace", str(workspace.root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["n"] == 6
    assert main(["report", str(a), "--workspace", str(workspace.root), "--html", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    assert main(["compare", str(a), str(b), "--workspace", str(workspace.root)]) == 0
    assert "wins" in capsys.readouterr().out
    assert main(["report", "99", "--workspace", str(workspace.root)]) == 2


def test_paper_table_rows_and_tests(runs, capsys):
    from ivt_core.paper_table import paper_table

    workspace, a, b = runs
    table = paper_table(workspace.connect(), [a, b])
    labels = [r["label"] for r in table["rows"]]
    assert labels[:2] == ["base single shot", "naive IVT"] and labels[2].endswith("+ IVT")
    single, naive, other = table["rows"]
    n = table["samples"]
    assert single["step0"]["acc@0.9"] == 1.0 and "final" not in single
    assert naive["final"]["acc@0.5"] == 0.0 and naive["oracle"]["acc@0.5"] == 1.0
    assert naive["vs_single_shot"]["final"] == {"wins": 0, "losses": n, "p": pytest.approx(2 / 2 ** n)}
    assert naive["per_step"][0]["break"] == 1.0 and naive["unreadable"] == 0.5
    assert other["vs_single_shot"]["final"]["wins"] == 0
    assert main(["paper-table", str(a), str(b), "--workspace", str(workspace.root), "--labels", "toy,whole"]) == 0
    out = capsys.readouterr().out
    assert "toy single shot" in out and "toy + IVT" in out and "whole + IVT" in out and "McNemar" in out
    with pytest.raises(InvalidInputError, match="one label per run"):
        paper_table(workspace.connect(), [a, b], ["x"])


def test_report_names_error_kinds(runs):
    workspace, a, _ = runs
    kinds = build_report(workspace.connect(), a)["error_kinds"]
    assert kinds["step0"] == {"correct": 1.0} and kinds["final"] == {"unreadable": 1.0}


def test_compare_tab_paper_table(runs):
    from ui.compare import paper_view
    from ui.context import AppContext

    workspace, a, b = runs
    frame, note = paper_view(AppContext(workspace), [a, b])
    assert list(frame[""]) == ["base single shot", "naive IVT", frame[""].iloc[2]]
    assert frame.iloc[1]["final step"] == "0.000/0.000/0.000" and "McNemar" in note
    assert "oracle (uses ground truth)" in frame.columns
    frame, note = paper_view(AppContext(workspace), [a, 999])
    assert "999" in note


def test_compare_opens_on_the_newest_runs_that_share_a_split(runs):
    """A fresh workspace's newest runs are a single shot on train and evaluations on val, which share no
    samples: Compare opens on the newest runs of one split (up to three: base, SFT, GRPO) instead of an error."""
    from ivt_core.data.shapes_split import write_shapes_split
    from ui.compare import comparable_runs
    from ui.context import AppContext

    workspace, a, b = runs
    write_shapes_split(workspace, "train", 3, seed=0)
    scripted = ScriptedGrounder(lambda t, s, c: WHOLE, with_conversation=True)
    other = evaluate(workspace, scripted, "/m", EvalRequest("shapes", "train", LoopConfig(steps=0))).run_id
    assert other > b > a
    assert comparable_runs(AppContext(workspace)) == [a, b]
    c, d = (evaluate(workspace, scripted, f"/m{i}", EvalRequest("shapes", "test", LoopConfig(steps=0))).run_id
            for i in (2, 3))
    assert comparable_runs(AppContext(workspace)) == [b, c, d]  # the newest three of that split
    evaluate(workspace, scripted, "/few", EvalRequest("shapes", "test", LoopConfig(steps=0), limit=2))
    assert comparable_runs(AppContext(workspace)) == [b, c, d]  # not with a newer run on fewer samples
    e = evaluate(workspace, scripted, "/m3", EvalRequest("shapes", "test", LoopConfig(steps=1))).run_id
    assert comparable_runs(AppContext(workspace)) == [b, c, e]  # one run per model first: not /m3's two runs


def test_a_derived_verdict_run_says_so_in_the_table_and_the_explorer(runs, capsys):
    from ivt_core.explore import step_view
    from ivt_core.paper_table import paper_table

    workspace, a, _ = runs

    def named(text, step, conversation):  # names a small blue square at every refinement, says it is correct
        if conversation[-1]["role"] == "assistant":  # asked to go on from the derived verdict
            return WHOLE
        return WHOLE if step == 0 else f"It is on the small blue square. The box is correct.\n{WHOLE}"

    grounder = ScriptedGrounder(named, with_conversation=True)
    derived = evaluate(workspace, grounder, "/m", EvalRequest("shapes", "test", LoopConfig(steps=1,
                                                                                          verdict="derived"))).run_id
    table = paper_table(workspace.connect(), [a, derived])
    assert table["rows"][-1]["label"].endswith("+ IVT, derived verdict")
    with workspace.connect() as db:
        replaced = db.execute("SELECT t.sample_id FROM steps s JOIN trajectories t ON s.trajectory_id = t.id "
                              "WHERE t.run_id = ? AND s.own_text != ''", [derived]).fetchall()
        assert replaced  # expressions that name no small blue square: its verdict replaced
        _, info = step_view(workspace, db, derived, replaced[0][0], 1, False, False)
    assert info["own_text"].startswith("It is on the small blue square. The box is correct.")
    assert not info["raw_text"].startswith("It is on the small blue square. The box is correct.")
    from ui.choices import run_choices
    from ui.compare import compare_view
    from ui.context import AppContext

    labels = dict((rid, label) for label, rid in run_choices(AppContext(workspace)))
    assert "T=1 fixed, derived verdict" in labels[derived] and "derived" not in labels[a]
    assert [r["verdict"] for r in compare_runs(workspace.connect(), [a, derived])["runs"]] == ["own", "derived"]
    table = compare_view(AppContext(workspace), [a, derived])[0]
    assert f"run {derived} · scripted · derived verdict" in table.columns
    assert main(["runs", "--workspace", str(workspace.root)]) == 0
    assert "T=1 fixed, derived verdict" in capsys.readouterr().out
