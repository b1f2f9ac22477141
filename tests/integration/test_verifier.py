"""The verifier test: a model's P("The box is correct.") on a base run's own step-0 boxes, and its AUROC."""

import json
import math

import pytest
import torch

from ivt_core.cli import main
from ivt_core.store.models import list_models
from ivt_core.verifier import KEEP_VERDICT, auroc, summarize, verdict_logprobs


def test_auroc_is_the_mann_whitney_statistic():
    assert auroc([2.0, 3.0], [1.0]) == 1.0
    assert auroc([1.0], [2.0, 3.0]) == 0.0
    assert auroc([0.5], [0.5]) == 0.5  # a tie counts half
    assert auroc([0.8, 0.4], [0.6, 0.2]) == 0.75  # 3 of the 4 pairs ordered right
    assert auroc([0.7, 0.7, 0.1], [0.7, 0.3]) == 0.5  # pairs: 1/2, 1, 1/2, 1, 0, 0
    assert auroc([], [0.1]) is None


def test_summary_splits_at_the_threshold():
    rows = [{"iou": 0.9, "p_keep": 0.8}, {"iou": 0.5, "p_keep": 0.6}, {"iou": 0.2, "p_keep": 0.7}]
    s = summarize(rows, 0.5)
    assert (s["right"], s["wrong"], s["auroc"]) == (2, 1, 0.5)
    assert s["keeps_right"] == 1.0 and s["keeps_wrong"] == 1.0
    assert summarize(rows, 0.95)["right"] == 0


def test_the_verdict_is_scored_on_its_own_tokens():
    """The score equals the sum of the model's per-token log-probabilities of the verdict's tokens (without the
    end of turn), from a plain forward over the whole conversation."""
    from PIL import Image

    from ivt_core.bootstrap import toy_model_path
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.supervision import build_example, collate

    grounder = TransformersGrounder.load(toy_model_path(), device="cpu")
    image = Image.new("RGB", (96, 64), "white")
    conversation = [{"role": "user", "content": [{"type": "image", "image": image},
                                                 {"type": "text", "text": "Where is the red circle?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": KEEP_VERDICT}]}]
    (score,) = verdict_logprobs(grounder, [conversation])
    example = build_example(grounder.processor, conversation)
    batch = collate([example], 0)
    labels = batch.pop("labels")[0]
    with torch.no_grad():
        logits = grounder.model(**batch).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    ids = example["input_ids"]
    span = [int(i) for i in (labels != -100).nonzero()[:, 0]]
    verdict = grounder.processor.tokenizer(KEEP_VERDICT, add_special_tokens=False)["input_ids"]
    assert [int(ids[i]) for i in span[:len(verdict)]] == verdict
    expected = sum(float(logp[i - 1, ids[i]]) for i in span[:len(verdict)])
    assert score == pytest.approx(expected, abs=1e-4) and score < 0
    assert math.exp(score) > 0


def test_the_command_judges_a_runs_step0_boxes_and_keeps_the_result_with_the_model(shapes_ws, capsys):
    from ivt_core.bootstrap import toy_model_path

    assert main(["eval", "--workspace", str(shapes_ws.root), "--dataset", "shapes", "--split", "test", "--steps", "0",
                 "--device", "cpu", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]
    code = main(["verifier", str(run_id), "--workspace", str(shapes_ws.root), "--device", "cpu", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["n"] == len(out["rows"]) == 6
    assert all(0.0 < row["p_keep"] < 1.0 for row in out["rows"])
    stored = [m["meta"].get(f"verifier_run{run_id}") for m in list_models(shapes_ws.connect())
              if m["base_path"] == str(toy_model_path().resolve())]
    assert stored and stored[0]["n"] == 6
    # the paper table reports it with the judging model's rows (here the toy again, in the loop)
    from ivt_core.paper_table import paper_table

    assert main(["eval", "--workspace", str(shapes_ws.root), "--dataset", "shapes", "--split", "test", "--steps", "1",
                 "--device", "cpu", "--json", "--max-new-tokens", "48"]) == 0
    looped = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]
    rows = paper_table(shapes_ws.connect(), [run_id, looped])["rows"]
    assert [(v["n"], v["auroc"]) for v in rows[-1]["verifier"]] == [(6, stored[0]["auroc"])]
    assert "verifier" not in rows[0]
    # read after the model's reasoning too: kept beside the first reading, not instead of it
    assert main(["verifier", str(run_id), "--workspace", str(shapes_ws.root), "--device", "cpu",
                 "--reasoning-first"]) == 0
    capsys.readouterr()
    rows = paper_table(shapes_ws.connect(), [run_id, looped])["rows"]
    assert [v.get("reasoning_first", False) for v in rows[-1]["verifier"]] == [False, True]
    assert rows[-1]["verifier"][0]["auroc"] == stored[0]["auroc"]
    assert main(["verifier", "99", "--workspace", str(shapes_ws.root), "--device", "cpu"]) == 2
    assert "no run" in capsys.readouterr().err


def test_the_probe_tabs_verifier_says_what_to_fix(shapes_ws):
    from ui.context import AppContext
    from ui.probe import run_verifier

    ctx = AppContext(shapes_ws)
    note, figure = run_verifier(ctx, None, None, 10)
    assert "Pick a model" in note and figure is None
    note, figure = run_verifier(ctx, 1, 999, None)
    assert "999" in note and figure is None
    note, _ = run_verifier(ctx, 1, 999, -3)
    assert "1 or more" in note


def test_summary_gives_the_auroc_against_each_kind_of_wrong_box():
    from ivt_core.verifier import summary_text

    rows = [{"iou": 0.9, "p_keep": 0.8, "kind": "correct"}, {"iou": 0.8, "p_keep": 0.4, "kind": "correct"},
            {"iou": 0.0, "p_keep": 0.9, "kind": "wrong colour"}, {"iou": 0.0, "p_keep": 0.7, "kind": "wrong colour"},
            {"iou": 0.3, "p_keep": 0.1, "kind": "loose edges"}]
    s = summarize(rows, 0.5)
    assert s["by_kind"] == {"wrong colour": {"n": 2, "auroc": 0.25}, "loose edges": {"n": 1, "auroc": 1.0}}
    assert summary_text({**s, "model": "m", "run_id": 1}).splitlines()[-1] == \
        "AUROC right vs each kind of wrong box: wrong colour 0.250 (2), loose edges 1.000 (1)"


def test_wrong_box_kind_says_what_tells_the_boxed_object_from_the_target():
    from ivt_core.boxes import Box
    from ivt_core.error_kinds import wrong_box_kind

    meta = {"target": 0, "objects": [
        {"kind": "circle", "colour": "red", "size": "small", "box": [0, 0, 10, 10]},
        {"kind": "circle", "colour": "blue", "size": "small", "box": [50, 0, 60, 10]},
        {"kind": "square", "colour": "red", "size": "small", "box": [0, 50, 10, 60]}]}
    truth = Box(0, 0, 10, 10)
    assert wrong_box_kind(Box(50, 0, 60, 10), truth, meta) == "wrong colour"
    assert wrong_box_kind(Box(0, 50, 10, 60), truth, meta) == "wrong shape"
    assert wrong_box_kind(Box(0, 0, 10, 10), truth, meta) == "correct"
    assert wrong_box_kind(Box(80, 80, 90, 90), truth, meta) == "background"
    assert wrong_box_kind(Box(50, 0, 60, 10), truth, {}) == "elsewhere"  # no known objects


@pytest.mark.parametrize("answer, reasoning", [
    ('It is on the small blue circle. Wrong colour.\n{"bbox_2d": [1, 2, 3, 4]}', "It is on the small blue circle."),
    ('Checking the edges: the box is tight. It sits on the red star. The box is correct. {"bbox_2d": [1, 2, 3, 4]}',
     "Checking the edges: the box is tight. It sits on the red star."),
    ('The box is correct.\n{"bbox_2d": [1, 2, 3, 4]}', ""),
    ("garbled text with no box", ""),
])
def test_the_reasoning_before_a_verdict_is_the_answer_less_its_box_and_last_sentence(answer, reasoning):
    from ivt_core.verifier import reasoning_before_verdict

    assert reasoning_before_verdict(answer) == reasoning


def test_reasoning_first_reads_p_keep_after_the_models_own_reasoning(shapes_ws):
    """P(keep | the model's reasoning) = P(reasoning, keep) / P(reasoning), on the same conversation the plain
    test scores; the rows keep the reasoning read."""
    from ivt_core.bootstrap import toy_model_path
    from ivt_core.data.sample import load_image
    from ivt_core.grounders.base import Generation
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.render import RenderStyle
    from ivt_core.store.samples import get_samples
    from ivt_core.verifier import keep_probability_rows

    grounder = TransformersGrounder.load(toy_model_path(), device="cpu")
    said = 'It is on the small blue circle. Wrong colour.\n{"bbox_2d": [10, 10, 200, 200]}'
    grounder.predict = lambda conversations, sampling=None: [Generation(said) for _ in conversations]
    samples = get_samples(shapes_ws.connect(), "shapes", "test", limit=2)
    images = [load_image(shapes_ws.resolve(s.image_path)) for s in samples]
    answers = {s.id: {"raw_text": '{"bbox_2d": [0, 0, 500, 500]}', "box": s.bbox, "iou": 1.0} for s in samples}
    plain = keep_probability_rows(grounder, samples, images, answers, RenderStyle(), "v1")
    rows = keep_probability_rows(grounder, samples, images, answers, RenderStyle(), "v1", reasoning_first=True)
    assert [r["reasoning"] for r in rows] == ["It is on the small blue circle."] * 2 and "reasoning" not in plain[0]

    # the same number from the two conversations by hand
    from ivt_core.prompts import get_prompts
    from ivt_core.render import render_box

    prompts = get_prompts(grounder.family.prompt_family, "v1")
    s, image = samples[0], images[0]
    turns = [{"role": "user", "content": [{"type": "image", "image": image},
                                          {"type": "text", "text": prompts.ground_text(s.expression)}]},
             {"role": "assistant", "content": [{"type": "text", "text": answers[s.id]["raw_text"]}]},
             {"role": "user", "content": [{"type": "image", "image": render_box(image, s.bbox, RenderStyle())},
                                          {"type": "text", "text": prompts.refine_text(s.expression)}]}]

    def said_(text):
        return turns + [{"role": "assistant", "content": [{"type": "text", "text": text}]}]

    both, alone = verdict_logprobs(grounder, [said_(f"It is on the small blue circle. {KEEP_VERDICT}"),
                                              said_("It is on the small blue circle.")])
    assert math.log(rows[0]["p_keep"]) == pytest.approx(both - alone, abs=1e-3)
    assert math.log(rows[0]["p_keep"]) != pytest.approx(math.log(plain[0]["p_keep"]), abs=0.1)


def test_the_command_reads_p_keep_after_the_reasoning_when_asked(shapes_ws, capsys):
    assert main(["eval", "--workspace", str(shapes_ws.root), "--dataset", "shapes", "--split", "test", "--steps", "0",
                 "--device", "cpu", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]
    assert main(["verifier", str(run_id), "--workspace", str(shapes_ws.root), "--device", "cpu", "--limit", "2",
                 "--reasoning-first", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["reasoning_first"] is True and all("reasoning" in row for row in out["rows"])
    assert main(["verifier", str(run_id), "--workspace", str(shapes_ws.root), "--device", "cpu", "--limit", "2"]) == 0
    assert "its own reasoning" not in capsys.readouterr().out
