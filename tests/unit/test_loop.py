import pytest
from PIL import Image

from ivt_core.boxes import Box
from ivt_core.data.sample import Sample
from ivt_core.errors import InvalidInputError
from ivt_core.loop import LoopConfig, run_batch, run_loop
from tests.fakes import ScriptedGrounder

IMG = Image.new("RGB", (200, 100), "white")


def _samples(n):
    return [Sample(f"s{i}", "d", "test", "", 200, 100, f"thing {i}", Box(0, 0, 100, 50)) for i in range(n)]


def _run(grounder, n=2, **kw):
    return run_batch(grounder, _samples(n), LoopConfig(**kw), [IMG] * n)


def test_steps_conversation_and_ious():
    boxes = ['{"bbox_2d": [0, 0, 1000, 1000]}', 'move {"bbox_2d": [0, 0, 500, 500]}', "nothing"]
    g = ScriptedGrounder(lambda text, step: boxes[step])
    trajs = _run(g, steps=2)
    t = trajs[0]
    assert [round(v, 3) for v in t.ious] == [0.25, 1.0, 0.0]
    assert t.steps[1].box == Box(0, 0, 100, 50) and t.steps[1].reasoning == "move"
    assert not t.steps[2].parse_ok and t.stop_step == 2
    last_conv = g.calls[2][0]
    assert [m["role"] for m in last_conv] == ["user", "assistant", "user", "assistant", "user"]
    assert last_conv[1]["content"][0]["text"] == boxes[0]
    shown = last_conv[4]["content"][0]["image"]
    assert shown.getpixel((50, 0)) == (255, 0, 0)  # step-1 box drawn in red on the refine image


def test_batch_advances_together_and_policy_drops_samples():
    def answer(text, step):
        if text.count("thing 0"):
            return '{"bbox_2d": [0, 0, 500, 500]}'  # repeats itself: converged after step 1
        return f'{{"bbox_2d": [0, 0, {300 + 200 * step}, 500]}}'

    g = ScriptedGrounder(answer)
    trajs = _run(g, steps=3, policy="converged")
    assert [t.stop_step for t in trajs] == [1, 3]
    assert [len(c) for c in g.calls] == [2, 2, 1, 1]


def test_self_policy_stops_on_verdict():
    g = ScriptedGrounder(lambda t, s: 'The box is correct. {"bbox_2d": [0, 0, 500, 500]}')
    assert _run(g, n=1, steps=3, policy="self")[0].stop_step == 1


def test_single_shot():
    g = ScriptedGrounder(lambda t, s: "[0, 0, 500, 500]")
    assert len(_run(g, steps=0)[0].steps) == 1 and len(g.calls) == 1


def test_qwen25_resized_pixels_are_rescaled():
    g = ScriptedGrounder(lambda t, s: '{"bbox_2d": [0, 0, 112, 56]}', family="qwen2_5_vl", resized=(224, 112))
    assert _run(g, n=1, steps=0)[0].steps[0].box == Box(0, 0, 100, 50)


def test_a_steps_boxes_are_drawn_on_several_threads_each_on_its_own_row(monkeypatch):
    """With many rows, the refine turns' boxes are drawn on the loop's drawing threads (a drawn box is a copy of the
    image; with one lane the GPU waits for the step's drawing), and each row still gets its own box."""
    import re
    import threading

    from ivt_core import loop

    draw, threads = loop.render_box, set()

    def spy(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return draw(*args, **kwargs)

    def answer(text, step):  # row k's box: 0 to 100 + 40 k of 1000
        right = int(re.search(r"thing (\d+)", text)[1]) * 40 + 100
        return f'{{"bbox_2d": [0, 0, {right}, 500]}}'

    monkeypatch.setattr(loop, "render_box", spy)
    n = loop.PARALLEL_DRAW + 4
    g = ScriptedGrounder(answer)
    _run(g, n=n, steps=1)
    assert threads and all(name.startswith("ivt-draw") for name in threads), threads
    for row, conversation in enumerate(g.calls[1]):
        right = (row * 40 + 100) * 200 // 1000  # the row's box's right edge, in pixels
        shown = conversation[2]["content"][0]["image"]
        assert shown.getpixel((right - 1, 20)) == (255, 0, 0) and shown.getpixel((right + 4, 20)) == (255, 255, 255)


def test_unparsable_step0_shows_plain_image():
    g = ScriptedGrounder(lambda t, s: "I don't know")
    _run(g, n=1, steps=1)
    assert g.calls[1][0][2]["content"][0]["image"].getpixel((0, 0)) == (255, 255, 255)


def test_run_loop_batches():
    g = ScriptedGrounder(lambda t, s: "[0, 0, 500, 500]")
    batches = list(run_loop(g, _samples(5), LoopConfig(steps=0, batch_size=2), lambda s: IMG))
    assert [len(b) for b in batches] == [2, 2, 1]


@pytest.mark.parametrize("kw", [{"steps": -1}, {"batch_size": -1}, {"policy": "oracle"}, {"policy": "x"},
                                {"engine": "fast"}])
def test_bad_config(kw):
    with pytest.raises(InvalidInputError):
        LoopConfig(**kw).check()


def test_a_verdict_of_correct_answers_with_the_box_it_judged():
    """The self rule scores the judged box b(t-1), not coordinates re-typed after the verdict (the SFT toy
    re-typed another box in 151 of 157 such answers)."""
    answers = ['{"bbox_2d": [0, 0, 500, 500]}', 'The box is correct. {"bbox_2d": [600, 600, 900, 900]}']
    g = ScriptedGrounder(lambda t, s: answers[s])
    t = _run(g, n=1, steps=2, policy="self")[0]
    assert t.stop_step == 1 and t.steps[1].box == t.steps[0].box == Box(0, 0, 100, 50)
    assert t.final_iou == t.step0_iou == 1.0 and "600, 600" in t.steps[1].raw_text


def test_a_keep_answer_may_omit_coordinates():
    answers = ['{"bbox_2d": [0, 0, 500, 500]}', "The box is correct.", "The box is correct."]
    t = _run(ScriptedGrounder(lambda t, s: answers[s]), n=1, steps=2)[0]
    assert [s.parse_ok for s in t.steps] == [True, True, True] and t.steps[2].box == Box(0, 0, 100, 50)
    assert t.steps[1].parse_failure is None and t.final_iou == 1.0


def test_a_verdict_with_nothing_shown_is_not_a_box():
    t = _run(ScriptedGrounder(lambda t, s: "The box is correct."), n=1, steps=1)[0]
    assert not t.steps[0].parse_ok and not t.steps[1].parse_ok  # step 0 showed no box; nor did step 1


RED_SQUARE = [Sample("s0", "d", "test", "", 200, 100, "the red square", Box(0, 0, 100, 50))]
STEP0 = '{"bbox_2d": [0, 0, 250, 250]}'


def _named(own: str, continuation: str = '{"bbox_2d": [0, 0, 500, 500]}'):
    """A name-first model: step 0 a box, then ``own`` at every refinement; asked to go on from a forced start,
    ``continuation``."""
    def answer(text, step, conversation):
        if conversation[-1]["role"] == "assistant":
            return continuation
        return STEP0 if step == 0 else own
    return ScriptedGrounder(answer, with_conversation=True)


def _derived(grounder, steps=1, verdict="derived"):
    return run_batch(grounder, RED_SQUARE, LoopConfig(steps=steps, verdict=verdict), [IMG])[0]


def test_the_derived_verdict_replaces_one_the_name_contradicts():
    own = 'It is on the small blue square. The box is correct.\n{"bbox_2d": [0, 0, 250, 250]}'
    g = _named(own)
    t = _derived(g)
    start = "It is on the small blue square. Wrong colour.\n"
    assert t.steps[1].raw_text == start + '{"bbox_2d": [0, 0, 500, 500]}' and t.steps[1].own_text == own
    assert t.steps[1].box == Box(0, 0, 100, 50) and t.steps[1].iou == 1.0 and not t.steps[1].says_correct
    assert t.steps[1].tokens_out == 10  # both answers' tokens
    forced = g.calls[-1][0]
    assert forced[-1] == {"role": "assistant", "content": [{"type": "text", "text": start}]}
    assert [m["role"] for m in forced] == ["user", "assistant", "user", "assistant"]
    mine = _derived(_named(own), verdict="own")
    assert mine.steps[1].raw_text == own and mine.steps[1].own_text == "" and mine.steps[1].says_correct


def test_the_derived_verdict_keeps_a_box_the_name_agrees_with():
    own = 'It is on the small red square. Wrong colour.\n{"bbox_2d": [500, 500, 1000, 1000]}'
    t = _derived(_named(own, '{"bbox_2d": [700, 700, 900, 900]}'), steps=2)
    for step in t.steps[1:]:
        assert step.raw_text.startswith("It is on the small red square. The box is correct.\n")
        assert step.says_correct and step.box == t.steps[0].box and step.own_text == own


@pytest.mark.parametrize("own", ['{"bbox_2d": [0, 0, 500, 500]}',  # no name: its answer stands
                                 'It is on the small blue square. Wrong colour.\n{"bbox_2d": [0, 0, 500, 500]}'])
def test_an_answer_already_as_derived_or_without_a_name_is_not_asked_again(own):
    g = _named(own)
    t = _derived(g, steps=2)
    assert len(g.calls) == 3 and [s.raw_text for s in t.steps[1:]] == [own, own]
    assert all(s.own_text == "" for s in t.steps)


def test_the_derived_verdict_needs_a_model_that_can_go_on_from_a_start():
    g = _named("x")
    g.forced_starts = False  # a model behind a chat server
    with pytest.raises(InvalidInputError, match="local checkpoint"):
        list(run_loop(g, RED_SQUARE, LoopConfig(steps=1, verdict="derived")))
    with pytest.raises(InvalidInputError, match="GRPO"):
        run_batch(_named("x"), RED_SQUARE, LoopConfig(steps=1, verdict="derived"), [IMG], keep_conversations=True)
    with pytest.raises(InvalidInputError, match="--verdict"):
        LoopConfig(verdict="mine").check()
