"""The cached engine answers exactly as the plain loop does (greedy), on tiny random models and the toy model."""

import pytest
import torch

from ivt_core.data.sample import load_image
from ivt_core.errors import InvalidInputError
from ivt_core.grounders.base import Sampling
from ivt_core.grounders.transformers_grounder import TransformersGrounder
from ivt_core.loop import LoopConfig, engine_for, run_batch, run_continuous, run_loop, run_samples
from ivt_core.store.samples import get_samples


def _stops_by_text(steps, policy):
    """A stand-in stopping rule that depends only on the answers, so both paths stop at the same steps and
    different samples stop at different steps."""
    return len(steps) >= 2 and len(steps[-1].raw_text) % 3 == 0


def _both(grounder, workspace, config, n, monkeypatch=None):
    samples = get_samples(workspace.connect(), "shapes", "test")[:n]
    loader = lambda s: load_image(workspace.resolve(s.image_path))  # noqa: E731
    plain = {t.sample_id: t for s in samples for t in run_batch(grounder, [s], config, [loader(s)])}
    cached = {t.sample_id: t for group in run_continuous(grounder, samples, config, loader) for t in group}
    assert set(plain) == set(cached) == {s.id for s in samples}
    return plain, cached


def _assert_same(plain, cached):
    for sample_id, trajectory in plain.items():
        other = cached[sample_id]
        assert [s.raw_text for s in other.steps] == [s.raw_text for s in trajectory.steps], sample_id
        assert [s.tokens_out for s in other.steps] == [s.tokens_out for s in trajectory.steps]
        assert [s.tokens_in for s in other.steps] == [s.tokens_in for s in trajectory.steps]
        assert other.stop_step == trajectory.stop_step


@pytest.fixture(scope="module")
def chatty_tiny(tmp_path_factory):
    """A tiny random Qwen3-VL with large weights: its answers vary with the input (at the default init a random
    model repeats one token), are unparsable, and re-tokenize to other ids than were generated."""
    from ivt_core.tinykit import TinySpec, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("chatty") / "m", "qwen3_vl", TinySpec(init_std=1.0))


@pytest.mark.parametrize("chunk_tokens", [16384, 1])
def test_engine_equals_plain_loop_on_a_tiny_model_with_unparsable_answers_and_early_stops(
        chatty_tiny, shapes_ws, monkeypatch, chunk_tokens):
    """Also with the prefill split into one forward per row (``PREFILL_CHUNK_TOKENS``: 1)."""
    from ivt_core.data.shapes_split import write_shapes_split

    monkeypatch.setattr("ivt_core.grounders.engine.PREFILL_CHUNK_TOKENS", chunk_tokens)
    write_shapes_split(shapes_ws, "test", 9, seed=0)
    monkeypatch.setattr("ivt_core.loop.should_stop", _stops_by_text)
    grounder = TransformersGrounder.load(chatty_tiny, device="cpu")
    config = LoopConfig(steps=3, batch_size=3, sampling=Sampling(max_new_tokens=24))
    plain, cached = _both(grounder, shapes_ws, config, 9)
    _assert_same(plain, cached)
    assert len({t.stop_step for t in plain.values()}) > 1  # samples left the batch at different steps
    assert all(not s.parse_ok for t in plain.values() for s in t.steps)  # random weights: unparsable answers
    assert len({s.raw_text for t in plain.values() for s in t.steps}) > 9  # answers differ: a real comparison


def _forces_some(expression, answer):
    """A stand-in for the derived verdict's rule that forces a start on about half the answers."""
    return "It is on the small red square. Wrong colour.\n" if len(answer) % 2 else None


def test_engine_equals_plain_loop_with_forced_starts(chatty_tiny, shapes_ws, monkeypatch):
    """The derived verdict's second answer (a forced start) on the engine: its row is cut back into the answer it
    had generated and goes on from the start; the same answers as the plain loop."""
    from ivt_core.data.shapes_split import write_shapes_split

    write_shapes_split(shapes_ws, "test", 6, seed=0)
    monkeypatch.setattr("ivt_core.loop.forced_start", _forces_some)
    grounder = TransformersGrounder.load(chatty_tiny, device="cpu")
    config = LoopConfig(steps=2, batch_size=3, sampling=Sampling(max_new_tokens=16), verdict="derived")
    plain, cached = _both(grounder, shapes_ws, config, 6)
    _assert_same(plain, cached)
    forced = [s for t in plain.values() for s in t.steps if s.own_text]
    assert forced and all(s.raw_text.startswith("It is on the small red square. Wrong colour.\n") for s in forced)
    assert [s.own_text for t in cached.values() for s in t.steps] == [s.own_text for t in plain.values()
                                                                     for s in t.steps]


def test_engine_equals_plain_loop_on_the_toy_model(shapes_ws):
    from ivt_core.bootstrap import toy_model_path

    grounder = TransformersGrounder.load(toy_model_path(), device="cpu")
    config = LoopConfig(steps=2, batch_size=4, sampling=Sampling(max_new_tokens=40))
    plain, cached = _both(grounder, shapes_ws, config, 6)
    _assert_same(plain, cached)
    assert any(s.parse_ok for t in plain.values() for s in t.steps)


def test_engine_encodes_only_the_new_turn(chatty_tiny, shapes_ws):
    from ivt_core.grounders.engine import CachedEngine

    grounder = TransformersGrounder.load(chatty_tiny, device="cpu")
    sample = get_samples(shapes_ws.connect(), "shapes", "test")[0]
    image = load_image(shapes_ws.resolve(sample.image_path))
    engine = CachedEngine(grounder.model, grounder.processor, "cpu")
    turn = {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Find it."}]}
    conversation = [turn]
    first = engine.step([("a", conversation)], Sampling(max_new_tokens=8))[0]
    prefill_first = engine.stats["prefill_tokens"]
    assert prefill_first == first.tokens_in
    conversation += [{"role": "assistant", "content": [{"type": "text", "text": first.text}]}, turn]
    second = engine.step([("a", conversation)], Sampling(max_new_tokens=8))[0]
    encoded = engine.stats["prefill_tokens"] - prefill_first
    assert encoded < second.tokens_in - first.tokens_in + first.tokens_out + 8  # not the whole conversation
    assert encoded >= second.tokens_in - first.tokens_in - first.tokens_out  # but at least the new turn


def test_the_prefill_attends_up_to_its_block_and_the_decode_to_whole_rows(chatty_tiny, shapes_ws, monkeypatch):
    """The prefill's attention leaves out the room kept for the answers (never attended to by its queries): its
    keys end at the block's end, rounded up to ``CAPACITY_STEP``; the decode reads whole rows (its graph's fixed
    shapes). The answers are those of an engine given no room to spare (a fresh one per conversation)."""
    from ivt_core.grounders import engine as engine_module
    from ivt_core.grounders.engine import CAPACITY_STEP, CachedEngine

    grounder = TransformersGrounder.load(chatty_tiny, device="cpu")
    sample = get_samples(shapes_ws.connect(), "shapes", "test")[0]
    image = load_image(shapes_ws.resolve(sample.image_path))
    engine = CachedEngine(grounder.model, grounder.processor, "cpu")
    seen = []  # (new tokens, keys handed to the attention, the cache's capacity) of every layer's cache update
    update = engine.rows_layer.update
    monkeypatch.setattr(engine.rows_layer, "update", lambda layer, new_keys, *a, **k: (
        seen.append((new_keys.shape[2], *(out := update(layer, new_keys, *a, **k))[0].shape[2:3], layer.keys.shape[2]))
        or out))
    turn = {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Find it."}]}
    sampling = Sampling(max_new_tokens=3 * CAPACITY_STEP)  # a room of several steps of capacity
    answer = engine.step([("a", [turn])], sampling)[0]
    prefill = [(keys, capacity) for new, keys, capacity in seen if new > 1]
    decode = [(keys, capacity) for new, keys, capacity in seen if new == 1]
    assert prefill and all(keys % CAPACITY_STEP == 0 and keys < capacity - 2 * CAPACITY_STEP for keys, capacity
                           in prefill)
    assert decode and all(keys == capacity for keys, capacity in decode)
    monkeypatch.setattr(engine_module, "CAPACITY_STEP", 1)
    again = CachedEngine(grounder.model, grounder.processor, "cpu").step([("a", [turn])], sampling)[0]
    assert again.token_ids == answer.token_ids


def _two_conversations(chatty_tiny, shapes_ws):
    """A fresh engine on the chatty tiny model and two conversations' first turns: (engine, conversations by
    sample id, their images)."""
    from ivt_core.grounders.engine import CachedEngine

    grounder = TransformersGrounder.load(chatty_tiny, device="cpu")
    samples = get_samples(shapes_ws.connect(), "shapes", "test")[:2]
    images = [load_image(shapes_ws.resolve(s.image_path)) for s in samples]
    engine = CachedEngine(grounder.model, grounder.processor, "cpu")
    conversations = {s.id: [{"role": "user", "content": [{"type": "image", "image": image},
                                                          {"type": "text", "text": f"Find {s.expression}."}]}]
                     for s, image in zip(samples, images, strict=True)}
    return engine, conversations, images


def test_engine_keeps_each_conversations_rotary_positions_as_the_whole_conversation_gives_them(chatty_tiny,
                                                                                                shapes_ws):
    """Only the new part's positions are computed at each step (after the kept part's, by ``ivt_core.rope``);
    they must equal the model's own rope index over the whole conversation, also after a cut back (answers that
    re-tokenize differently, which the chatty model gives) and with the answer tokens fed back during decoding."""
    engine, conversations, images = _two_conversations(chatty_tiny, shapes_ws)
    for turn in range(3):
        answers = engine.step(list(conversations.items()), Sampling(max_new_tokens=6 + 5 * turn))
        for (key, conversation), answer, image in zip(conversations.items(), answers, images, strict=True):
            state = engine.conversations[key]
            ids = torch.tensor([state.fed])
            whole, _ = engine.inner.get_rope_index(ids, (ids == engine.image_token_id).int(),  # the model's own
                                                   image_grid_thw=torch.stack(state.grids))
            assert torch.equal(state.positions, whole[:, 0]), (key, turn)
            conversation += [{"role": "assistant", "content": [{"type": "text", "text": answer.text}]},
                             {"role": "user", "content": [{"type": "image", "image": image},
                                                          {"type": "text", "text": "Check the box."}]}]
    assert engine.stats["cut_back"] > 0  # the case where positions are cut back too was exercised
    assert engine.fast_rope  # computed by ivt_core.rope, which agreed with the model on its probe


def test_a_conversation_left_out_of_a_step_is_answered_afresh_when_it_comes_back(chatty_tiny, shapes_ws):
    """Each step's cache holds the rows of that step's conversations only. A conversation left out of a step
    (a server answering whichever requests arrived) must not read another row's keys when it comes back: it
    is encoded again, and answers as a fresh engine does."""
    from ivt_core.grounders.engine import CachedEngine

    grounder = TransformersGrounder.load(chatty_tiny, device="cpu")
    samples = get_samples(shapes_ws.connect(), "shapes", "test")[:2]
    images = [load_image(shapes_ws.resolve(s.image_path)) for s in samples]
    turns = {k: [{"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": f"Find {k}."}]}]
             for k, im in zip("ab", images, strict=True)}
    sampling = Sampling(max_new_tokens=6)
    engine = CachedEngine(grounder.model, grounder.processor, "cpu")
    for key, answer in zip("ab", engine.step(list(turns.items()), sampling), strict=True):
        turns[key] += [{"role": "assistant", "content": [{"type": "text", "text": answer.text}]},
                       {"role": "user", "content": [{"type": "text", "text": "Check the box."}]}]
    engine.step([("a", turns["a"])], sampling)  # b is left out of this step
    (again,) = engine.step([("b", turns["b"])], sampling)
    (fresh,) = CachedEngine(grounder.model, grounder.processor, "cpu").step([("b", turns["b"])], sampling)
    assert again.text == fresh.text and again.token_ids == fresh.token_ids


def _after_one_step(chatty_tiny, shapes_ws):
    """An engine on the chatty tiny model after one step of two conversations, each given its answer and a next
    turn: (engine, conversations, sampling)."""
    engine, conversations, _ = _two_conversations(chatty_tiny, shapes_ws)
    sampling = Sampling(max_new_tokens=6)
    for conversation, answer in zip(conversations.values(), engine.step(list(conversations.items()), sampling),
                                    strict=True):
        conversation += [{"role": "assistant", "content": [{"type": "text", "text": answer.text}]},
                         {"role": "user", "content": [{"type": "text", "text": "Check the box."}]}]
    return engine, conversations, sampling


def test_the_compaction_lets_each_old_layer_go_before_the_next_layers_buffers_are_made(chatty_tiny, shapes_ws,
                                                                                        monkeypatch):
    """At a step with history the cache is rebuilt layer by layer: when a layer's new buffers are made, the old
    layers before the previous one are gone (their memory is the allocator's again), so the step holds the old
    cache and a layer or two of the new one, not both caches whole (which on a GPU also had the allocator map
    fresh memory for all of the new one while the GPU waited). The answers are the plain loop's (other tests)."""
    import gc
    import weakref

    engine, conversations, sampling = _after_one_step(chatty_tiny, shapes_ws)
    old = [weakref.ref(layer.keys) for layer in engine.cache.layers]
    alive_at = []  # at each new buffer made: how many old layers' keys are still alive
    make = engine._new_buffer
    monkeypatch.setattr(engine, "_new_buffer", lambda *a, **k: (
        gc.collect(), alive_at.append(sum(ref() is not None for ref in old)), make(*a, **k))[2])
    engine.step(list(conversations.items()), sampling)
    layers = len(old)
    assert layers >= 2 and len(alive_at) == 2 * layers
    # the buffers of new layer i are made while old layers i.. (and none before i - 0) are alive
    assert alive_at == [layers - i for i in range(layers) for _ in range(2)]
    assert all(ref() is None for ref in old)


def test_a_compaction_that_fails_halfway_leaves_every_conversation_to_be_encoded_afresh(chatty_tiny, shapes_ws,
                                                                                       monkeypatch):
    """The compaction lets the old layers go as it gathers them; if it fails halfway (out of memory), the engine
    must not answer the next step from a cache it no longer has: the step raises, and the next one answers as a
    fresh engine does."""
    from ivt_core.grounders.engine import CachedEngine

    engine, conversations, sampling = _after_one_step(chatty_tiny, shapes_ws)
    make, made = engine._new_buffer, []

    def out_of_memory(*args, **kwargs):
        made.append(1)
        if len(made) == 3:  # the second layer's keys
            raise torch.OutOfMemoryError("out of memory (test)")
        return make(*args, **kwargs)

    monkeypatch.setattr(engine, "_new_buffer", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        engine.step(list(conversations.items()), sampling)
    again = engine.step(list(conversations.items()), sampling)
    fresh = CachedEngine(engine.model, engine.processor, "cpu").step(list(conversations.items()), sampling)
    assert [a.token_ids for a in again] == [f.token_ids for f in fresh]


def test_prefill_chunks_cover_the_rows_in_order_in_equal_parts_of_about_the_token_budget():
    from ivt_core.grounders.engine import prefill_chunks

    assert prefill_chunks([], 10) == []
    assert prefill_chunks([4, 4, 4], 100) == [(0, 3)]
    assert prefill_chunks([4, 4, 4, 4, 4], 8) == [(0, 2), (2, 4), (4, 5)]  # 20 tokens: 3 chunks of 2 rows
    assert prefill_chunks([4] * 7, 10) == [(0, 2), (2, 4), (4, 6), (6, 7)]  # equal row counts, the last one smaller
    assert prefill_chunks([3, 3], 1) == [(0, 1), (1, 2)]  # never fewer than one row per chunk
    # the padded block counts (rows x the longest row), and the row count is a power of two: blocks a few
    # tokens apart are cut alike (the forwards' shapes repeat across steps)
    assert prefill_chunks([2, 2, 2, 2, 9], 40) == [(0, 4), (4, 5)]
    assert prefill_chunks([350] * 256, 16384) == prefill_chunks([362] * 256, 16384) == [
        (start, start + 32) for start in range(0, 256, 32)]


def test_engine_choice(tiny_models):
    qwen3 = TransformersGrounder.load(tiny_models["qwen3_vl"], device="cpu")
    qwen2 = TransformersGrounder.load(tiny_models["qwen2_vl"], device="cpu")
    assert engine_for(qwen3, LoopConfig()) == "cached"
    assert engine_for(qwen3, LoopConfig(engine="plain")) == "plain"
    assert engine_for(qwen2, LoopConfig()) == "plain"
    with pytest.raises(InvalidInputError, match="--engine plain"):
        engine_for(qwen2, LoopConfig(engine="cached"))
    with pytest.raises(InvalidInputError, match="--engine"):
        list(run_loop(qwen3, [], LoopConfig(engine="fast")))


def test_auto_batch_size(chatty_tiny, shapes_ws):
    from ivt_core.grounders.batch_size import auto_batch_size

    grounder = TransformersGrounder.load(chatty_tiny, device="cpu")
    assert auto_batch_size(grounder.model, grounder.processor, (224, 224), 2, 60, "cpu") == 16
    samples = get_samples(shapes_ws.connect(), "shapes", "test")
    config = LoopConfig(steps=1, batch_size=0, sampling=Sampling(max_new_tokens=4))
    loader = lambda s: load_image(shapes_ws.resolve(s.image_path))  # noqa: E731
    assert sum(len(group) for group in run_loop(grounder, samples, config, loader)) == len(samples)
    assert len(list(run_loop(grounder, samples, LoopConfig(steps=0, batch_size=0, engine="plain"), loader))) == 1


def test_device_patchify_path_gives_the_processors_pixels(chatty_tiny):
    from PIL import Image

    from ivt_core.grounders.engine import CachedEngine

    grounder = TransformersGrounder.load(chatty_tiny, device="cpu")
    engine = CachedEngine(grounder.model, grounder.processor, "cpu")
    engine.patchify_on_device = True  # the GPU path, run on the CPU
    images = [Image.effect_noise((224, 224), 60).convert("RGB"), Image.new("RGB", (224, 224), (200, 10, 10))]
    expected = grounder.processor.image_processor(images=images, return_tensors="pt")
    rows, grids = engine._pixels(images)
    assert torch.allclose(torch.cat(rows), expected["pixel_values"], atol=1e-5)
    assert torch.equal(torch.stack(grids), expected["image_grid_thw"])
    odd = [Image.new("RGB", (230, 200))]  # not at the processor's size: the processor itself resizes it
    assert engine._pixels(odd)[0][0].shape == grounder.processor.image_processor(images=odd, return_tensors="pt")[
        "pixel_values"].shape


@pytest.mark.parametrize("chunk_tokens", [16384, 1])
def test_a_groups_copies_of_one_prompt_are_encoded_once(shapes_ws, monkeypatch, chunk_tokens):
    """GRPO's G rollouts of a prompt (same ids, the same image object) share one prefill at their first step;
    greedy, the whole T=2 loop gives what encoding every copy gives (copies of the image: nothing shared). Also
    with one prefill forward per encoded row."""
    from ivt_core.bootstrap import TOY_SFT_PATH
    from ivt_core.grounders.engine import CachedEngine

    monkeypatch.setattr("ivt_core.grounders.engine.PREFILL_CHUNK_TOKENS", chunk_tokens)

    grounder = TransformersGrounder.load(TOY_SFT_PATH, device="cpu")  # its refinement steps give boxes
    samples = get_samples(shapes_ws.connect(), "shapes", "test")[:2]
    scenes = [load_image(shapes_ws.resolve(s.image_path)) for s in samples]
    batch = [s for s in samples for _ in range(3)]
    config = LoopConfig(steps=2, batch_size=6, sampling=Sampling(max_new_tokens=40))
    shared, alone = CachedEngine(grounder.model, grounder.processor, "cpu"), CachedEngine(
        grounder.model, grounder.processor, "cpu")
    together = run_samples(grounder, batch, config, [scene for scene in scenes for _ in range(3)], engine=shared)
    apart = run_samples(grounder, batch, config, [scene.copy() for scene in scenes for _ in range(3)], engine=alone)
    assert shared.stats["shared_rows"] == 4 and "shared_rows" not in alone.stats
    assert shared.stats["prefill_tokens"] < alone.stats["prefill_tokens"]
    for one, other in zip(together, apart, strict=True):
        assert [s.raw_text for s in one.steps] == [s.raw_text for s in other.steps]
        assert [s.tokens_in for s in one.steps] == [s.tokens_in for s in other.steps]
    assert any(s.parse_ok for t in together for s in t.steps[1:])  # later steps read the copied cache


def test_two_lanes_answer_as_the_plain_loop_and_each_lane_takes_samples(chatty_tiny, shapes_ws, monkeypatch):
    """Lanes (two engines taking turns, each in its own thread) change nothing a sample gets: greedy answers
    equal the plain loop's with early stops and more samples than rows; both lanes ran steps; an error in a
    lane is raised in the caller's thread."""
    import copy

    from ivt_core.data.shapes_split import write_shapes_split
    from ivt_core.grounders.engine import CachedEngine

    write_shapes_split(shapes_ws, "test", 9, seed=0)
    monkeypatch.setattr("ivt_core.loop.should_stop", _stops_by_text)
    grounder = TransformersGrounder.load(chatty_tiny, device="cpu")
    config = LoopConfig(steps=3, batch_size=4, lanes=2, sampling=Sampling(max_new_tokens=24))
    samples = get_samples(shapes_ws.connect(), "shapes", "test")[:9]
    images = [load_image(shapes_ws.resolve(s.image_path)) for s in samples]
    plain = {t.sample_id: t for s, image in zip(samples, images, strict=True)
             for t in run_batch(grounder, [s], config, [image])}
    lanes = [CachedEngine(grounder.model, processor, "cpu") for processor in (grounder.processor,
                                                                          copy.deepcopy(grounder.processor))]
    laned = run_samples(grounder, samples, config, images, engine=lanes)
    assert [t.sample_id for t in laned] == [s.id for s in samples]
    _assert_same(plain, {t.sample_id: t for t in laned})
    assert all(engine.stats["forwards"] for engine in lanes)  # each lane ran
    # the auto path (no engines given) makes its own two lanes, with a copy of the processor for the second
    again = run_samples(grounder, samples, config, images)
    _assert_same(plain, {t.sample_id: t for t in again})

    def broken(*args, **kwargs):
        raise RuntimeError("lane failed")

    failing = [CachedEngine(grounder.model, grounder.processor, "cpu") for _ in range(2)]
    failing[1].step = broken
    with pytest.raises(RuntimeError, match="lane failed"):
        run_samples(grounder, samples, config, images, engine=failing)


def test_each_lane_runs_in_the_same_thread_from_one_run_to_the_next(chatty_tiny, shapes_ws, monkeypatch):
    """Lane number k runs in one thread for the process's lifetime (what GPU libraries keep per thread, such as
    cuDNN's attention plans, lasts across evaluations and GRPO steps), and the lanes of one run in distinct threads."""
    import threading

    from ivt_core.data.shapes_split import write_shapes_split
    from ivt_core.grounders.engine import CachedEngine

    write_shapes_split(shapes_ws, "test", 4, seed=0)
    grounder = TransformersGrounder.load(chatty_tiny, device="cpu")
    config = LoopConfig(steps=1, batch_size=2, lanes=2, sampling=Sampling(max_new_tokens=4))
    samples = get_samples(shapes_ws.connect(), "shapes", "test")[:4]
    images = [load_image(shapes_ws.resolve(s.image_path)) for s in samples]
    runs = []
    for _ in range(2):
        threads = {}
        lanes = [CachedEngine(grounder.model, grounder.processor, "cpu") for _ in range(2)]
        for number, engine in enumerate(lanes):
            seen = threads.setdefault(number, set())
            monkeypatch.setattr(engine, "step", lambda *a, _step=engine.step, _seen=seen, **k: (
                _seen.add(threading.current_thread()) or _step(*a, **k)))
        run_samples(grounder, samples, config, images, engine=lanes)
        runs.append(threads)
    assert all(len(threads) == 1 for run in runs for threads in run.values())
    assert runs[0] == runs[1] and runs[0][0] != runs[0][1]
    assert threading.main_thread() not in runs[0][0] | runs[0][1]


def test_deferred_images_are_read_chunk_by_chunk_with_the_same_rows(tiny_models):
    """On a GPU (``defer_pixels``) images get their grids at once and their pixel rows only when a prefill chunk
    (or a lane's turn) asks for them, each chunk's pending images in one call: the same rows and grids as
    computed at once."""
    from PIL import Image

    from ivt_core.grounders.deferred_pixels import PendingRow as _Row
    from ivt_core.grounders.deferred_pixels import resolved as _resolved
    from ivt_core.grounders.engine import CachedEngine

    grounder = TransformersGrounder.load(tiny_models["qwen3_vl"], device="cpu")
    images = [Image.new("RGB", (64, 96), (10 * i, 40, 200 - 10 * i)) for i in range(3)]
    now = CachedEngine(grounder.model, grounder.processor, "cpu")
    rows, grids = now._pixels(images)
    later = CachedEngine(grounder.model, grounder.processor, "cpu")
    later.defer_pixels = True  # as on a GPU (only ``_pixels`` is called here)
    later.pixel_cache = {}
    deferred, later_grids = later._pixels(images)
    assert all(isinstance(row, _Row) for row in deferred) and not later.pixel_cache  # nothing computed yet
    assert [g.tolist() for g in later_grids] == [g.tolist() for g in grids]
    first = _resolved(deferred[:1])
    assert len(later.pixel_cache) == 1  # the first chunk's image only
    rest = _resolved(deferred)
    assert len(later.pixel_cache) == 3 and rest[0] is first[0]  # the others in one call; the first not again
    for row, expected in zip(rest, rows, strict=True):
        assert torch.allclose(row, expected, atol=1e-5)  # patchified by torch, as on a GPU (tested equal)


def test_the_engine_counts_the_cache_entries_its_decode_steps_read(chatty_tiny):
    """``decode_kv_tokens`` (the benchmark's memory floor): each decode step reads the live cache of every row, the
    prompt and the answer so far, and writes one entry per row."""
    from PIL import Image

    from ivt_core.grounders.engine import CachedEngine

    grounder = TransformersGrounder.load(chatty_tiny, device="cpu")
    engine = CachedEngine(grounder.model, grounder.processor, "cpu")
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    conversation = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Find"}]}]
    answer = engine.step([("a", conversation)], Sampling(max_new_tokens=6))[0]
    steps = engine.stats["decode_steps"]
    assert steps == len(answer.token_ids) - 1 > 0  # the last token chosen is not fed back
    assert engine.stats["decode_kv_tokens"] == sum(answer.tokens_in + i + 1 for i in range(steps))
    # the vision tower's tokens (the floor's vision compute): 4 patches per image token with a 2x2 merge
    config = grounder.model.config
    assert engine.stats["vision_images"] == 1
    assert engine.stats["vision_patches"] == (engine.conversations["a"].fed.count(config.image_token_id)
                                              * config.vision_config.spatial_merge_size ** 2) > 0


def test_the_benchmark_floor_counts_the_vision_tower_per_patch(chatty_tiny, monkeypatch):
    """The floor's prefill compute: the vision tower's parameters once per patch (4 per image token), not once
    per language token as before session 12."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import loop_throughput

    model = TransformersGrounder.load(chatty_tiny, device="cpu").model
    vision = next(m for m in model.modules() if type(m).__name__.endswith("VisionModel"))
    vision_params = sum(p.numel() for p in vision.parameters())
    monkeypatch.setitem(loop_throughput.FLOOR, "peak_tflops", 1e-9)  # 1 FLOP per ms: the floor's ms are FLOPs
    monkeypatch.setitem(loop_throughput.FLOOR, "hbm_tbs", 1e30)  # memory for free
    text_only = loop_throughput.floor_ms(model, 100, 0, 0, 0, 1)
    with_images = loop_throughput.floor_ms(model, 100, 0, 0, 0, 1, vision_patches=400, vision_images=1)
    config = model.config.vision_config
    merger = sum(p.numel() for name, m in vision.named_children() if "merger" in name for p in m.parameters())
    expected = (400 * (2 * (vision_params - merger) + 4 * config.depth * config.hidden_size * 400)
                + 400 / config.spatial_merge_size ** 2 * 2 * merger)
    assert text_only > 0 and merger > 0
    # text_only counted the vision parameters per language token; with patches they are counted per patch
    assert with_images - (text_only - 100 * 2 * vision_params) == pytest.approx(expected)


def test_the_profile_finds_where_the_gpu_waits_and_what_the_cpu_did_meanwhile(monkeypatch):
    """``engine_profile.idle_gaps`` on a made-up timeline: the gaps between GPU work (streams merged, overlaps
    not counted as gaps, pauses under 5 us ignored), each in the innermost phase the CPU was in."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import engine_profile

    def event(cat, name, ts, dur):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur}

    timeline = [
        event("user_annotation", "ivt:gpu_step", 0, 1000), event("user_annotation", "ivt:prefill", 100, 300),
        event("kernel", "a", 0, 100), event("kernel", "b", 50, 60),  # overlapping streams: busy until 110
        event("gpu_memcpy", "c", 112, 10),  # a 2 us pause: the GPU's own
        event("cpu_op", "aten::_cudnn_attention_forward", 130, 100), event("kernel", "d", 300, 50),  # gap 122-300
        event("cuda_runtime", "cudaHostAlloc", 500, 100), event("kernel", "e", 700, 10),  # gap 350-700: no prefill
        event("kernel", "f", 1500, 10),  # gap 710-1500: outside a step (its middle 1105 is after the step)
    ]
    idle = engine_profile.idle_gaps(timeline, top=5)
    assert idle["gaps"] == 3 and idle["idle_ms"] == (178 + 350 + 790) / 1000 and idle["span_ms"] == 1.51
    assert idle["by_phase"] == {engine_profile.NAMES[None]: 0.79, engine_profile.NAMES["ivt:gpu_step"]: 0.35,
                                engine_profile.NAMES["ivt:prefill"]: 0.178}
    assert idle["cpu_ops"][engine_profile.NAMES["ivt:prefill"]] == [
        {"name": "aten::_cudnn_attention_forward", "ms": 0.1}]
    assert idle["cpu_ops"][engine_profile.NAMES["ivt:gpu_step"]] == [{"name": "cudaHostAlloc", "ms": 0.1}]


def test_the_profile_puts_each_kernel_under_the_phase_that_launched_it(monkeypatch):
    """``engine_profile.by_phase`` on a made-up timeline: a kernel counts under the innermost phase its launch was
    in, found by the correlation id of the launch (a runtime call, a graph's launch, or a driver call as Triton
    makes them), wherever the kernel itself ran; a kernel whose launch is not in the timeline counts outside."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import engine_profile

    def event(cat, name, ts, dur, correlation=None):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur,
                "args": {} if correlation is None else {"correlation": correlation}}

    timeline = [
        event("user_annotation", "ivt:gpu_step", 0, 1000), event("user_annotation", "ivt:compact", 10, 100),
        event("user_annotation", "ivt:decode", 500, 400),
        event("cuda_driver", "cuLaunchKernel", 20, 5, 1), event("kernel", "_gather_kernel", 300, 40, 1),
        event("cuda_runtime", "cudaLaunchKernel", 200, 5, 2), event("kernel", "fill", 210, 10, 2),
        event("cuda_runtime", "cudaGraphLaunch", 600, 5, 3), event("kernel", "_decode_kernel", 610, 20, 3),
        event("kernel", "_decode_kernel", 640, 20, 3), event("kernel", "orphan", 990, 10, 9),
    ]
    got = engine_profile.by_phase(timeline)
    names = engine_profile.NAMES
    assert got[names["ivt:compact"]] == {"kernels": 1, "all": [{"name": "_gather_kernel", "calls": 1,
                                                                   "cuda_ms": 0.04}]}
    assert got[names["ivt:gpu_step"]]["all"] == [{"name": "fill", "calls": 1, "cuda_ms": 0.01}]
    assert got[names["ivt:decode"]] == {"kernels": 2, "all": [{"name": "_decode_kernel", "calls": 2,
                                                                 "cuda_ms": 0.04}]}
    assert got[names[None]]["all"][0]["name"] == "orphan"


def test_the_decode_kernel_stays_off_on_the_cpu_and_its_dispatch_falls_back_to_sdpa(tiny_models, tmp_path):
    """On the CPU (CI) the language model keeps transformers' SDPA (the Triton kernels are GPU tests), and the
    attention function the kernels are registered under gives SDPA's numbers for every call they do not take (a
    prefill block or a decode step off the GPU, with or without the engine's rows for the prefill kernel); a model
    saved afterwards names no attention of ours."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from ivt_core.grounders import decode_attention
    from ivt_core.grounders.prefill_attention import PrefillRows, fits

    grounder = TransformersGrounder.load(tiny_models["qwen3_vl"], device="cpu")
    assert decode_attention.why_not(grounder.model)
    assert decode_attention.enable_decode_attention(grounder.model) is False
    assert grounder.model.config.get_text_config()._attn_implementation == "sdpa"

    class Layer(torch.nn.Module):
        num_key_value_groups = 2
        is_causal = True

    layer = Layer().eval()
    generator = torch.Generator().manual_seed(0)
    for queries in (5, 1):  # a prefill block, a decode step
        query = torch.randn(3, 4, queries, 64, generator=generator)
        key, value = (torch.randn(3, 2, 9, 64, generator=generator) for _ in range(2))
        mask = torch.rand(3, 1, queries, 9, generator=generator) > 0.3
        mask[..., 0] = True
        got, _ = decode_attention.attention(layer, query, key, value, mask, scaling=0.125)
        expected, _ = sdpa_attention_forward(layer, query, key, value, mask, scaling=0.125)
        assert torch.equal(got, expected)
        # the engine's prefill hands its rows for the prefill kernel; off the GPU, SDPA on the dense mask as before
        rows = PrefillRows.of(mask[:, 0, -1, :], end=4)
        assert rows.first.tolist() == [0, 0, 0] and not fits(layer, query, key, value, rows)
        got, _ = decode_attention.attention(layer, query, key, value, mask, scaling=0.125, ivt_prefill=rows)
        assert torch.equal(got, expected)
    # as ``enable_decode_attention`` leaves it on a GPU: a checkpoint saved from it loads anywhere
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(decode_attention.NAME, decode_attention.attention)
    AttentionMaskInterface.register(decode_attention.NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    grounder.model.config.get_text_config()._attn_implementation = decode_attention.NAME
    grounder.model.config.save_pretrained(tmp_path)
    assert decode_attention.NAME not in (tmp_path / "config.json").read_text()
