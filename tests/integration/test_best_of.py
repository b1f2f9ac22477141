"""Best-of-K self-selection, the baseline the loop must beat at equal compute: sampled single-shot runs
(`ivt eval --temperature --seed`) and the paper table's best-of row, from the CLI and the Compare tab."""

import json

from ivt_core.cli import main
from ivt_core.paper_table import paper_table, self_selected
from ivt_core.store.runs import load_trajectories


def _single_shot(ws, capsys, *extra):
    assert main(["eval", "--workspace", str(ws.root), "--dataset", "shapes", "--split", "test", "--steps", "0",
                 "--device", "cpu", "--max-new-tokens", "48", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]


def _boxes(db, run_id):
    return {t.sample_id: t.steps[0] for t in load_trajectories(db, run_id)}


def test_sampled_runs_make_the_best_of_k_row(shapes_ws, capsys):
    from ui.compare import paper_view
    from ui.context import AppContext

    greedy = _single_shot(shapes_ws, capsys)
    first = _single_shot(shapes_ws, capsys, "--temperature", "1.5", "--seed", "1")
    second = _single_shot(shapes_ws, capsys, "--temperature", "1.5", "--seed", "2")
    again = _single_shot(shapes_ws, capsys, "--temperature", "1.5", "--seed", "1")
    db = shapes_ws.connect()
    answers = {rid: {k: s.raw_text for k, s in _boxes(db, rid).items()} for rid in (greedy, first, second, again)}
    assert answers[first] == answers[again]  # the same seed, the same answers
    assert answers[first] != answers[greedy] and answers[first] != answers[second]  # sampled, not greedy

    table = paper_table(db, [greedy], best_of=[first, second])
    row = next(r for r in table["rows"] if r.get("best_of"))
    assert row["label"] == "best-of-3 self-selected" and row["n"] == 6
    steps = [_boxes(db, rid) for rid in (greedy, first, second)]
    chosen = [per[self_selected([p[sid].box for p in steps])].iou
              for sid in sorted(steps[0]) for per in [[p[sid] for p in steps]]]
    assert row["final"]["acc@0.5"] == sum(v >= 0.5 for v in chosen) / 6
    assert row["oracle"]["acc@0.5"] >= max(row["final"]["acc@0.5"], row["step0"]["acc@0.5"])
    assert set(row["vs_single_shot"]["final"]) == {"wins", "losses", "p"}

    assert main(["paper-table", str(greedy), "--best-of", f"{first},{second}", "--workspace",
                 str(shapes_ws.root)]) == 0
    out = capsys.readouterr().out
    assert "best-of-3 self-selected" in out and "best-of-3: the base model's greedy answer" in out
    assert main(["paper-table", str(first), "--best-of", str(greedy), "--workspace", str(shapes_ws.root)]) == 2
    assert "must be a sampled single shot" in capsys.readouterr().err

    from ui.compare import sampled_choices

    assert [rid for _, rid in sampled_choices(AppContext(shapes_ws))] == [again, second, first]  # not the greedy
    frame, _ = paper_view(AppContext(shapes_ws), [greedy], candidates=[first, second])  # the paper panel's picker
    assert list(frame[""]) == ["base single shot", "best-of-3 self-selected"]
    for selection in ([greedy, first, second], [first, greedy, second]):  # Compare sorts them out itself, even
        frame, note = paper_view(AppContext(shapes_ws), selection)       # with a sampled run as the baseline
        assert list(frame[""]) == ["base single shot", "best-of-3 self-selected"] and "best-of-3" in note
        assert frame.iloc[0]["step 0"] == "/".join(f"{row['step0'][f'acc@{t}']:.3f}" for t in (0.5, 0.7, 0.9))
