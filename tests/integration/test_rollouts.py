"""GRPO scores what it sampled: the sampled token ids (not the text tokenized again), no invented end token
after a truncated answer, and the same sampling distribution in the plain loop and the cached engine."""

import pytest
import torch
from PIL import Image

from ivt_core.grounders.base import Sampling
from ivt_core.grounders.processing import load_processor
from ivt_core.supervision import IGNORE, build_rollout_example

IMAGE = Image.new("RGB", (64, 64), "white")


def _conversation(first_ids, second_ids, end, truncated_second=True):
    return [
        {"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": "find it"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "whatever the text says"}],
         "token_ids": [*first_ids, end], "truncated": False},
        {"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": "again"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "cut"}], "token_ids": second_ids,
         "truncated": truncated_second},
    ]


@pytest.fixture(scope="module")
def processor(tiny_models):
    return load_processor(tiny_models["qwen3_vl"], "qwen3_vl")


def test_the_sampled_ids_are_what_is_scored(processor):
    end = processor.tokenizer.eos_token_id
    example = build_rollout_example(processor, _conversation([5, 6, 7], [8, 9], end), {1, 3})
    ids, labels = example["input_ids"].tolist(), example["labels"].tolist()
    assert [t for t in labels if t != IGNORE] == [5, 6, 7, end, 8, 9]
    cut = max(i for i, t in enumerate(labels) if t != IGNORE)  # the truncated answer's last sampled token
    assert ids[cut] == 9 and ids[cut + 1] == end and labels[cut + 1] == IGNORE  # the template's end: context only
    assert int((example["input_ids"] == processor.image_token_id).sum()) == int(example["mm_token_type_ids"].sum())


def test_truncated_answers_can_be_left_out(processor):
    end = processor.tokenizer.eos_token_id
    example = build_rollout_example(processor, _conversation([5], [8, 9], end), {1, 3}, drop_truncated=True)
    assert [t for t in example["labels"].tolist() if t != IGNORE] == [5, end]


def test_a_sampled_image_placeholder_voids_the_rollout(processor):
    end = processor.tokenizer.eos_token_id
    example = build_rollout_example(processor, _conversation([processor.image_token_id], [8], end), {1, 3})
    assert (example["labels"] == IGNORE).all()
    assert int((example["input_ids"] == processor.image_token_id).sum()) == int(example["mm_token_type_ids"].sum())


def test_the_plain_loop_samples_without_a_top_k_cut(tiny_models, monkeypatch):
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    grounder = TransformersGrounder.load(tiny_models["qwen3_vl"], device="cpu")
    seen = {}
    original = grounder.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(grounder.model, "generate", spy)
    conversation = [{"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": "x"}]}]
    answer = grounder.predict([conversation], Sampling(max_new_tokens=3, do_sample=True, temperature=0.7))[0]
    assert seen["top_k"] == 0 and seen["temperature"] == 0.7  # as the engine: temperature and top-p only
    assert 1 <= len(answer.token_ids) <= 3 and answer.tokens_out == len(answer.token_ids)
    assert answer.truncated == (processor_end(grounder) not in answer.token_ids)


def processor_end(grounder):
    return grounder.processor.tokenizer.eos_token_id


def test_the_engine_records_sampled_ids_and_truncation(tiny_models):
    from ivt_core.boxes import Box
    from ivt_core.data.sample import Sample
    from ivt_core.grounders.engine import supports
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import LoopConfig, run_batch

    grounder = TransformersGrounder.load(tiny_models["qwen3_vl"], device="cpu")
    assert supports(grounder) is None
    sample = Sample("s", "d", "t", "", 64, 64, "thing", Box(0, 0, 9, 9))
    for engine in ("cached", "plain"):
        torch.manual_seed(0)
        trajectory = run_batch(grounder, [sample], LoopConfig(steps=1, engine=engine, sampling=Sampling(
            max_new_tokens=3, do_sample=True)), [IMAGE], keep_conversations=True)[0]
        answers = [m for m in trajectory.conversation if m["role"] == "assistant"]
        assert len(answers) == 2 and all(1 <= len(m["token_ids"]) <= 3 for m in answers), engine
        assert all(m["truncated"] == (processor_end(grounder) not in m["token_ids"]) for m in answers), engine


def _rollouts(model_path, workspace, prompts: int, group: int, max_new_tokens: int, pixel_cache=None):
    """G sampled T=2 rollouts of a few prompts through the cached engine, as GRPO takes them (one image object
    per prompt; ``pixel_cache``: the engine keeps every image's pixels there, as the trainer asks)."""
    from ivt_core.data.sample import load_image
    from ivt_core.grounders.engine import CachedEngine
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import LoopConfig, run_samples
    from ivt_core.store.samples import get_samples

    grounder = TransformersGrounder.load(model_path, device="cpu")
    samples = get_samples(workspace.connect(), "shapes", "test")[:prompts]
    scenes = [load_image(workspace.resolve(s.image_path)) for s in samples]
    torch.manual_seed(0)
    config = LoopConfig(steps=2, batch_size=prompts * group,
                        sampling=Sampling(max_new_tokens=max_new_tokens, do_sample=True))
    batch = [s for s in samples for _ in range(group)]
    images = [scene for scene in scenes for _ in range(group)]
    engine = CachedEngine(grounder.model, grounder.processor, "cpu", pixel_cache=pixel_cache)
    return grounder, run_samples(grounder, batch, config, images, keep_conversations=True, engine=engine)


def _same_training_rows(fast: dict, slow: dict) -> None:
    """Equal where it matters: the ids up to the last labelled token (after it the template's tail is context
    that no label sees), the labels, the image positions; the slow row may be longer only by unlabelled tail."""
    ids, labels = fast["input_ids"].tolist(), fast["labels"].tolist()
    n = len(ids)
    assert slow["input_ids"].tolist()[:n] == ids
    assert slow["labels"].tolist()[:n] == labels
    assert all(t == IGNORE for t in slow["labels"].tolist()[n:])
    assert slow["mm_token_type_ids"].tolist()[:n] == fast["mm_token_type_ids"].tolist()


@pytest.mark.parametrize("drop_truncated", [False, True])
def test_training_rows_from_the_engines_ids_equal_the_templated_ones(shapes_ws, drop_truncated):
    """GRPO's fast path (the engine's own prompt ids, no chat template or tokenizer) gives the rows the templated
    path gives, truncated answers and refinement-only labels included. At 11 tokens the toy's first answer is
    cut after '[ddd,', which the next turn holds as sampled; at 12, after '[ddd, ', whose space the loop's text
    drops, so the next turn holds other ids than were sampled: the sampled ones are put back. At 40 the SFT
    toy's earlier answers end with their own end token, which stands for the template's."""
    from ivt_core.bootstrap import TOY_SFT_PATH, toy_model_path
    from ivt_core.supervision import rollout_example_from_ids

    truncated = respliced = ended = 0
    for model, limit in ((toy_model_path(), 11), (toy_model_path(), 12), (TOY_SFT_PATH, 40)):
        grounder, trajectories = _rollouts(model, shapes_ws, 2, 3, limit)
        tokenizer = grounder.processor.tokenizer
        for trajectory in trajectories:
            conversation = trajectory.conversation
            answers = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
            truncated += any(conversation[i]["truncated"] for i in answers)
            ended += any(not conversation[i]["truncated"] for i in answers[:-1])
            respliced += any(tokenizer.decode(conversation[i]["token_ids"]).endswith(" ") for i in answers[:-1])
            for trained in (set(answers), set(answers[1:])):
                fast = rollout_example_from_ids(conversation, trained, grounder.processor.image_token_id,
                                                tokenizer.eos_token_id, drop_truncated)
                _same_training_rows(fast, build_rollout_example(grounder.processor, conversation, trained,
                                                                drop_truncated))
    assert truncated > 0 and respliced > 0 and ended > 0


def test_the_fast_rows_equal_the_templated_ones_for_answers_that_re_tokenize_differently(chatty_tiny_rollouts):
    """The chatty random model's answers re-tokenize to other ids (and to other lengths) than were sampled."""
    from ivt_core.supervision import rollout_example_from_ids

    grounder, trajectories = chatty_tiny_rollouts
    tokenizer = grounder.processor.tokenizer
    differ = 0
    for trajectory in trajectories:
        conversation = trajectory.conversation
        answers = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
        differ += any(tokenizer(m["content"][0]["text"], add_special_tokens=False)["input_ids"]
                      != [t for t in m["token_ids"] if t != tokenizer.eos_token_id]
                      for m in (conversation[i] for i in answers[:-1]))
        fast = rollout_example_from_ids(conversation, set(answers), grounder.processor.image_token_id,
                                        tokenizer.eos_token_id)
        if fast is None:  # only a sampled image token voids a rollout
            assert any(grounder.processor.image_token_id in conversation[i]["token_ids"] for i in answers)
            continue
        _same_training_rows(fast, build_rollout_example(grounder.processor, conversation, set(answers)))
    assert differ > 0


def test_grpo_micro_batch_equals_the_templated_one(shapes_ws, monkeypatch):
    """The trainer's micro-batch (fast rows where possible, the pixels the rollout's engine computed) gives the
    model what the templated rows give: ids, labels, rope positions, grids and pixels."""
    import ivt_core.supervision as supervision
    from ivt_core.bootstrap import toy_model_path
    from ivt_core.config.training import GRPOConfig
    from ivt_core.supervision import collate, cpu_rope_index
    from training.grpo import _trajectory_tensors

    pixels: dict = {}
    grounder, trajectories = _rollouts(toy_model_path(), shapes_ws, 2, 3, 12, pixels)
    assert len(pixels) == 2 + 2 * 3 * 2  # each scene once, each rendered image
    processed = []
    real = supervision._process_images
    monkeypatch.setattr(supervision, "_process_images", lambda *a: processed.append(a) or real(*a))
    voided = trajectories[0].conversation[1]  # a sampled image token: the templated path, which voids it
    voided["token_ids"] = [grounder.processor.image_token_id, *voided["token_ids"][1:]]
    model, processor = grounder.model, grounder.processor
    rope = cpu_rope_index(type(model.model), model.config)
    pad = processor.tokenizer.pad_token_id
    chunk = list(range(len(trajectories)))
    cfg = GRPOConfig(workspace="unused", base="unused")
    batch = _trajectory_tensors(processor, trajectories, chunk, cfg, rope, pad, pixels=pixels)
    assert batch["rebuilt"] == 1  # both paths in one micro-batch
    assert processed == []  # every image's pixels came from the rollout
    slow = collate([build_rollout_example(processor, t.conversation, {i for i, m in enumerate(t.conversation)
                                                                      if m["role"] == "assistant"})
                    for t in trajectories], pad, rope)
    assert torch.equal(batch["image_grid_thw"], slow["image_grid_thw"])
    assert torch.allclose(batch["pixel_values"], slow["pixel_values"], atol=1e-6)
    for row in chunk:
        n = int(batch["attention_mask"][row].sum())
        fast_row = {k: batch[k][row, :n] for k in ("input_ids", "labels", "mm_token_type_ids")}
        _same_training_rows(fast_row, {k: slow[k][row] for k in ("input_ids", "labels", "mm_token_type_ids")})
        assert torch.equal(batch["position_ids"][:, row, :n], slow["position_ids"][:, row, :n])


@pytest.fixture(scope="module")
def chatty_tiny_rollouts(tmp_path_factory):
    from ivt_core.data.shapes_split import write_shapes_split
    from ivt_core.tinykit import TinySpec, build_tiny_model
    from ivt_core.workspace import Workspace

    root = tmp_path_factory.mktemp("chatty-rollouts")
    model = build_tiny_model(root / "m", "qwen3_vl", TinySpec(init_std=1.0))
    workspace = Workspace.open(root / "ws")
    write_shapes_split(workspace, "test", 3, seed=0)
    return _rollouts(model, workspace, 3, 3, 10)


def test_the_engines_draws_follow_softmax_of_logits_over_temperature_within_top_p():
    """The cached engine samples by the exponential race: its frequencies match softmax(logits / T) (and zero
    outside the top-p nucleus), as torch.multinomial's would."""
    from ivt_core.grounders.engine import _choose

    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(40_000, 1)
    for temperature, top_p in ((1.0, 1.0), (0.5, 1.0), (1.0, 0.8)):
        drawn = _choose(logits, Sampling(do_sample=True, temperature=temperature, top_p=top_p))
        frequencies = torch.bincount(drawn, minlength=4).float() / len(drawn)
        expected = (logits[0] / temperature).softmax(-1)
        if top_p < 1.0:  # 0.64 + 0.24: the smallest set reaching 0.8
            expected = torch.tensor([expected[0], expected[1], 0, 0]) / (expected[0] + expected[1])
        assert torch.allclose(frequencies, expected, atol=0.01), (temperature, top_p, frequencies, expected)
