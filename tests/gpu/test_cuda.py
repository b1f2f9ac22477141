"""GPU tier: the transformers grounder and the loop on CUDA (run on the device machine: pytest -m gpu)."""

import pytest
from PIL import Image

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    if not torch.cuda.is_available():
        pytest.fail("the gpu tier needs a CUDA GPU")
    from ivt_core.tinykit import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("gpu") / "q3", "qwen3_vl")


def _conv(text):
    image = Image.new("RGB", (224, 160), (120, 30, 200))
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


def test_cuda_batched_generation_matches_single(tiny):
    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    g = TransformersGrounder.load(tiny, device="cuda")
    assert next(g.model.parameters()).device.type == "cuda"
    convs = [_conv("Locate the small red circle left of the blue square."), _conv("Locate it.")]
    sampling = Sampling(max_new_tokens=6)
    assert [a.text for a in g.predict(convs, sampling)] == [g.predict([c], sampling)[0].text for c in convs]


def test_cuda_sampling_runs(tiny):
    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    g = TransformersGrounder.load(tiny, device="cuda")
    out = g.predict([_conv("x")] * 4, Sampling(max_new_tokens=4, do_sample=True, temperature=1.0))
    assert len(out) == 4


def test_cuda_loop_end_to_end(tiny):
    from ivt_core.data.sample import Sample
    from ivt_core.data.shapes import ShapesConfig, make_sample
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import LoopConfig, run_batch

    g = TransformersGrounder.load(tiny, device="cuda")
    raw = [make_sample(ShapesConfig(), 0, "test", i) for i in range(4)]
    samples = [Sample(s.id, "shapes", "test", "", 224, 224, s.expression, s.bbox) for s in raw]
    trajs = run_batch(g, samples, LoopConfig(steps=2), [s.image for s in raw])
    assert all(len(t.steps) == 3 for t in trajs)


def test_cuda_four_bit(tiny):
    pytest.importorskip("bitsandbytes")
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    g = TransformersGrounder.load(tiny, load_in_4bit=True, device="cuda")
    assert any("4bit" in type(m).__name__ for m in g.model.modules())


@pytest.mark.parametrize("chunk_tokens", [16384, 200])
def test_cuda_engine_with_graphs_equals_plain_loop_in_float32(monkeypatch, chunk_tokens):
    """The cached engine on a GPU (CUDA-graph decode, patchify on the device, the prefill and decode attention
    kernels) against the plain loop, float32; also with the prefill in chunks of ~2 rows (pixels read while the
    previous chunk runs, copied from page-locked memory)."""
    monkeypatch.setattr("ivt_core.grounders.engine.PREFILL_CHUNK_TOKENS", chunk_tokens)
    from ivt_core.grounders import prefill_attention

    kernel, prefills = prefill_attention.prefill_attention, []
    monkeypatch.setattr(prefill_attention, "prefill_attention", lambda *a, **k: prefills.append(1) or kernel(*a, **k))
    from ivt_core.bootstrap import toy_model_path
    from ivt_core.data.sample import Sample
    from ivt_core.data.shapes import ShapesConfig, make_sample
    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.engine import CachedEngine
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import LoopConfig, run_batch, run_samples

    g = TransformersGrounder.load(toy_model_path(), device="cuda")
    g.model.float()
    raw = [make_sample(ShapesConfig(), 0, "test", i) for i in range(12)]
    samples = [Sample(s.id, "shapes", "test", "", 224, 224, s.expression, s.bbox) for s in raw]
    images = [s.image for s in raw]
    config = LoopConfig(steps=2, batch_size=5, sampling=Sampling(max_new_tokens=40))
    plain = [t for s, image in zip(samples, images, strict=True) for t in run_batch(g, [s], config, [image])]
    engine = CachedEngine(g.model, g.processor, g.device)
    forwards = []
    prefill = engine._prefill
    monkeypatch.setattr(engine, "_prefill", lambda *a, **k: forwards.append(1) or prefill(*a, **k))
    cached = run_samples(g, samples, config, images, engine=engine)
    assert engine.stats.get("graphs", 0) >= 1, engine.stats.get("graph_error")
    # every layer of every prefill forward went through the prefill kernel
    assert forwards and len(prefills) == len(forwards) * g.model.config.get_text_config().num_hidden_layers
    assert [[s.raw_text for s in t.steps] for t in cached] == [[s.raw_text for s in t.steps] for t in plain]
    # two lanes, each on its own stream and thread, graphs captured while the other lane runs: the same answers
    import copy

    lanes = [CachedEngine(g.model, processor, g.device, own_stream=True)
             for processor in (g.processor, copy.deepcopy(g.processor))]
    laned = run_samples(g, samples, config, images, engine=lanes)
    assert all(lane.stats.get("graphs", 0) >= 1 for lane in lanes), [lane.stats.get("graph_error") for lane in lanes]
    assert [[s.raw_text for s in t.steps] for t in laned] == [[s.raw_text for s in t.steps] for t in plain]


def test_cuda_engine_with_derived_verdicts_equals_plain_loop_in_float32():
    """``--verdict derived`` on a GPU: the shipped name-first SFT toy, T=2; where a forced start replaces its
    verdict, the engine's row is cut back into the answer it generated and goes on from the start (CUDA-graph
    decode, prefill kernel); the same answers as the plain loop, float32."""
    from ivt_core.bootstrap import TOY_SFT_PATH
    from ivt_core.data.sample import Sample
    from ivt_core.data.shapes import ShapesConfig, make_sample
    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import LoopConfig, run_batch, run_samples

    g = TransformersGrounder.load(TOY_SFT_PATH, device="cuda")
    g.model.float()
    raw = [make_sample(ShapesConfig(), 0, "test", i) for i in range(64)]
    samples = [Sample(s.id, "shapes", "test", "", 224, 224, s.expression, s.bbox) for s in raw]
    images = [s.image for s in raw]
    config = LoopConfig(steps=2, batch_size=16, sampling=Sampling(max_new_tokens=60), verdict="derived")
    plain = [t for s, image in zip(samples, images, strict=True) for t in run_batch(g, [s], config, [image])]
    cached = run_samples(g, samples, config, images)
    assert any(s.own_text for t in plain for s in t.steps)  # some verdicts were replaced
    for field in ("raw_text", "own_text"):
        assert [[getattr(s, field) for s in t.steps] for t in cached] == [[getattr(s, field) for s in t.steps]
                                                                          for t in plain]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("rows,heads,kv_heads,capacity,dim", [(256, 32, 8, 900, 128), (2, 32, 8, 1300, 128),
                                                              (5, 4, 2, 200, 64)])
def test_cuda_decode_attention_equals_sdpa(rows, heads, kv_heads, capacity, dim, dtype):
    """The decode kernel (one query token per row, grouped heads, a cache with holes; split and merged on few rows)
    against SDPA in float32 on the same inputs."""
    from ivt_core.grounders.decode_attention import decode_attention, splits_for

    dtype = getattr(torch, dtype)
    generator = torch.Generator(device="cuda").manual_seed(0)
    query = torch.randn(rows, heads, 1, dim, device="cuda", generator=generator).to(dtype)
    key, value = (torch.randn(rows, kv_heads, capacity, dim, device="cuda", generator=generator).to(dtype)
                  for _ in range(2))
    live = torch.rand(rows, capacity, device="cuda", generator=generator) < 0.8
    live[:, -7:] = False  # room not written yet
    live[-1, 3:] = False  # a row with three live slots
    dead = ~live[:, None, :].expand(rows, kv_heads, capacity)
    key[dead], value[dead] = float("nan"), float("nan")  # never read: whatever a dead slot holds changes nothing
    got = decode_attention(query, key, value, live, dim ** -0.5)
    key, value = key.nan_to_num(0.0), value.nan_to_num(0.0)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query.float(), key.float(), value.float(), attn_mask=live[:, None, None, :], enable_gqa=True).transpose(1, 2)
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    assert got.shape == (rows, 1, heads, dim) and got.dtype == dtype
    assert torch.allclose(got.float(), expected, atol=tolerance, rtol=tolerance), (got.float() - expected).abs().max()
    if rows == 2:
        assert splits_for(rows, kv_heads, capacity) > 1  # the split-and-merge path was the one tested


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("rows,heads,kv_heads,history,width,dim,layout", [
    (40, 32, 8, 900, 400, 128, "transformers"), (5, 4, 2, 200, 37, 64, "contiguous"),
    (3, 6, 2, 150, 29, 64, "transformers"), (2, 2, 2, 0, 50, 128, "contiguous")])
def test_cuda_prefill_attention_equals_sdpa_with_the_engines_mask(rows, heads, kv_heads, history, width, dim, layout,
                                                                  dtype):
    """The prefill kernel (a right-padded block per row, left-padded histories with holes, grouped heads, a group of
    3 (padded to 4 in the kernel's tile), no grouping, no history, keys cut before the answers' room, the query
    in transformers' layout or contiguous) against SDPA in float32 with the engine's dense mask (live and
    causal)."""
    from ivt_core.grounders.prefill_attention import PrefillRows, prefill_attention

    dtype = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(0)
    end, capacity = history, history + width + 60
    live = torch.zeros(rows, capacity, dtype=torch.bool)
    for row in range(rows):
        kept = int(torch.randint(history // 3, history + 1, (1,), generator=generator))
        live[row, end - kept:end] = torch.rand(kept, generator=generator) < 0.9  # holes
        live[row, end:end + int(torch.randint(1, width + 1, (1,), generator=generator))] = True
    live = live.cuda()
    attend = end + width + 7
    if layout == "transformers":  # [rows, width, heads, dim] seen as [rows, heads, width, dim]
        query = torch.randn(rows, width, heads, dim, generator=generator).to("cuda", dtype).transpose(1, 2)
    else:
        query = torch.randn(rows, heads, width, dim, generator=generator).to("cuda", dtype)
    key, value = (torch.randn(rows, kv_heads, capacity, dim, generator=generator).to("cuda", dtype)
                  for _ in range(2))
    dead = ~live[:, None, :].expand(rows, kv_heads, capacity)
    key[dead], value[dead] = float("nan"), float("nan")  # never read
    got = prefill_attention(query, key[:, :, :attend], value[:, :, :attend], PrefillRows.of(live, end), dim ** -0.5)
    causal = torch.arange(attend, device="cuda")[None, :] <= (end + torch.arange(width, device="cuda"))[:, None]
    mask = live[:, None, None, :attend] & causal[None, None]
    key, value = key.nan_to_num(0.0)[:, :, :attend], value.nan_to_num(0.0)[:, :, :attend]
    expected = torch.nn.functional.scaled_dot_product_attention(
        query.float(), key.float(), value.float(), attn_mask=mask, enable_gqa=True).transpose(1, 2)
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    assert got.shape == (rows, width, heads, dim) and got.dtype == dtype
    assert torch.allclose(got.float(), expected, atol=tolerance, rtol=tolerance), (got.float() - expected).abs().max()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_vision_mlp_with_its_gelu_in_the_product_equals_the_stock_mlp(dtype):
    """The vision MLP's first product with the tanh GELU in cuBLASLt's epilogue against transformers' module (the 4B
    shape's 1024 -> 4096 -> 1024); training and autograd keep the stock forward."""
    import json
    from pathlib import Path

    from transformers import AutoConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionMLP

    from ivt_core.grounders.fast_vision import enable_gelu_epilogue

    shape = json.loads((Path(__file__).parents[2] / "benchmarks/shapes/qwen3-vl-4b-shape.json").read_text())
    config = AutoConfig.for_model(**shape).vision_config
    dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(Qwen3VLVisionMLP(config)).to("cuda", dtype).eval()
    patches = torch.randn(4800, config.hidden_size, device="cuda", dtype=dtype)
    with torch.no_grad():
        expected = mlp(patches)
        assert enable_gelu_epilogue(mlp) == 1
        got = mlp(patches)
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    assert torch.allclose(got.float(), expected.float(), atol=tolerance, rtol=tolerance), \
        (got.float() - expected.float()).abs().max()
    assert torch.equal(mlp(patches), expected)  # with autograd on: the stock forward


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_compaction_kernel_gathers_what_indexing_gathers(dtype):
    """The compaction's gather kernel writes each new row's first ``width`` slots exactly as PyTorch's indexing does
    (rows taken from other rows, repeated, slots in any order; the column index tensor a strided view, as the
    engine's is) and nothing after them."""
    from ivt_core.grounders import cache_gather

    dtype = getattr(torch, dtype)
    generator = torch.Generator(device="cuda").manual_seed(0)
    old = tuple(torch.randn(40, 8, 700, 128, device="cuda", generator=generator).to(dtype) for _ in range(2))
    src_rows = torch.randint(0, 40, (33,), device="cuda", generator=generator)
    src_cols = torch.randint(0, 700, (33, 514), device="cuda", generator=generator)[:, :513]
    new = tuple(torch.full((33, 8, 900, 128), float("nan"), device="cuda", dtype=dtype) for _ in range(2))
    assert cache_gather.usable(new[0])
    cache_gather.gather_slots(new, old, src_rows, src_cols)
    for got, source in zip(new, old, strict=True):
        assert torch.equal(got[:, :, :513], source[src_rows[:, None], :, src_cols].transpose(1, 2))
        assert got[:, :, 513:].isnan().all()


def test_cuda_engine_step_waits_for_the_gpu_only_in_its_reads_and_captures_keep_the_caches(monkeypatch):
    """A whole step (the compaction, the block's inputs, the images, the prefill forwards with the vision tower,
    image features and DeepStack, the decode graph's capture and replays) queues its work without waiting for the
    GPU anywhere but the engine's reads back (``_read_back``: whether every row has ended, the tokens, the step's
    timing): CUDA's sync debug mode raises on any other wait. The decode graph's capture does not empty the
    allocators' caches (``torch.cuda.graph`` does: every step then allocated its cache and page-locked buffers
    from the driver again)."""
    from ivt_core.bootstrap import toy_model_path
    from ivt_core.data.shapes import ShapesConfig, make_sample
    from ivt_core.grounders import engine as engine_module
    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.engine import CachedEngine
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    g = TransformersGrounder.load(toy_model_path(), device="cuda")
    engine = CachedEngine(g.model, g.processor, g.device)
    assert engine.image_prefill is not None, engine.image_prefill_off
    step, reads = engine.step, []

    def strict(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return step(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    def read_back(read):
        torch.cuda.set_sync_debug_mode("default")
        try:
            reads.append(read)
            return read()
        finally:
            torch.cuda.set_sync_debug_mode("error")

    emptied = []
    monkeypatch.setattr(engine, "step", strict)
    monkeypatch.setattr(engine_module, "_read_back", read_back)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append("device"))
    monkeypatch.setattr(torch._C, "_host_emptyCache", lambda: emptied.append("host"))
    monkeypatch.setattr(engine_module, "PREFILL_CHUNK_TOKENS", 300)  # several chunks per step
    requests = []
    for index in range(6):
        image = make_sample(ShapesConfig(), 0, "test", index).image
        requests.append((index, [{"role": "user", "content": [{"type": "image", "image": image},
                                                             {"type": "text", "text": "Where is it?"}]}]))
    for _ in range(3):
        answers = engine.step(requests, Sampling(max_new_tokens=20))
        requests = [(key, [*conversation, {"role": "assistant", "content": [{"type": "text", "text": answer.text}]},
                           conversation[0]]) for (key, conversation), answer in zip(requests, answers, strict=True)]
    assert engine.stats["forwards"] > 6 and engine.stats.get("graphs", 0) == 3, engine.stats.get("graph_error")
    assert reads and emptied == []
    assert engine.stats["compact_s"] > 0 and engine.stats["prefill_s"] > 0 and engine.stats["decode_s"] > 0


def test_cuda_compaction_holds_the_old_cache_and_a_layer_of_the_new_one_not_both_whole():
    """The compaction of a step with history, on the GPU: its peak is the old cache plus the growth plus about a
    layer of the new one (each old layer let go once gathered), not the old and the new cache whole; the answers
    are the plain loop's (the float32 tests above)."""
    from ivt_core.bootstrap import toy_model_path
    from ivt_core.data.shapes import ShapesConfig, make_sample
    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.engine import CachedEngine
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    g = TransformersGrounder.load(toy_model_path(), device="cuda")
    engine = CachedEngine(g.model, g.processor, g.device)
    requests = []
    for index in range(16):
        image = make_sample(ShapesConfig(), 0, "test", index).image
        requests.append((index, [{"role": "user", "content": [{"type": "image", "image": image},
                                                             {"type": "text", "text": "Where is it?"}]}]))
    sampling = Sampling(max_new_tokens=30)
    answers = engine.step(requests, sampling)
    states = [engine.conversations[key] for key, _ in requests]
    plan = engine._plan_compaction(states, 200 + sampling.max_new_tokens)
    old = sum(t.numel() * t.element_size() for layer in engine.cache.layers for t in (layer.keys, layer.values))
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    engine._compact(states, plan)
    torch.cuda.synchronize()
    new = sum(t.numel() * t.element_size() for layer in engine.cache.layers for t in (layer.keys, layer.values))
    layer = new // len(engine.cache.layers)
    assert new > old and all(answer.tokens_out for answer in answers)
    assert torch.cuda.max_memory_allocated() - before <= new - old + 2 * layer + 2**20  # the masks, the indices
    assert torch.cuda.memory_allocated() - before <= new - old + 2**20


def test_cuda_decode_kernel_gives_the_same_answers_and_is_used(monkeypatch):
    """The toy (float32, CUDA graphs) answers the same through the loop with the decode kernel as with SDPA, and the
    kernel did run (it is called while the decode graph is captured)."""
    from ivt_core.bootstrap import toy_model_path
    from ivt_core.data.sample import Sample
    from ivt_core.data.shapes import ShapesConfig, make_sample
    from ivt_core.grounders import decode_attention
    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import LoopConfig, run_samples

    raw = [make_sample(ShapesConfig(), 0, "test", i) for i in range(8)]
    samples = [Sample(s.id, "shapes", "test", "", 224, 224, s.expression, s.bbox) for s in raw]
    images = [s.image for s in raw]
    config = LoopConfig(steps=2, batch_size=8, sampling=Sampling(max_new_tokens=40))
    calls = []
    kernel = decode_attention.decode_attention
    monkeypatch.setattr(decode_attention, "decode_attention", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    answers = {}
    for on in (False, True):
        monkeypatch.setenv(decode_attention.SWITCH, "1" if on else "0")
        g = TransformersGrounder.load(toy_model_path(), device="cuda")
        g.model.float()
        assert g.model.config.get_text_config()._attn_implementation == ("ivt_sdpa" if on else "sdpa")
        answers[on] = [[s.raw_text for s in t.steps] for t in run_samples(g, samples, config, images)]
        assert bool(calls) == on
    assert answers[True] == answers[False]


def test_cuda_fused_kernels_give_the_same_numbers_in_float32(monkeypatch):
    """Liger's RMSNorm, rotary (language and vision) and SwiGLU kernels on the toy model (float32): the same logits
    as transformers' own modules within float32 rounding, and the same greedy answers through the loop."""
    pytest.importorskip("liger_kernel")
    from transformers.models.qwen3_vl import modeling_qwen3_vl

    from ivt_core.bootstrap import toy_model_path
    from ivt_core.data.sample import Sample
    from ivt_core.data.shapes import ShapesConfig, make_sample
    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.fused_kernels import SWITCH, enable_fused_kernels
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import LoopConfig, run_samples

    def reference_rotary(q, k, cos, sin, unsqueeze_dim=1):  # transformers' own, whatever Liger patched
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        rotate = modeling_qwen3_vl.rotate_half
        return q * cos + rotate(q) * sin, k * cos + rotate(k) * sin

    raw = [make_sample(ShapesConfig(), 0, "test", i) for i in range(8)]
    samples = [Sample(s.id, "shapes", "test", "", 224, 224, s.expression, s.bbox) for s in raw]
    images = [s.image for s in raw]
    config = LoopConfig(steps=2, batch_size=8, lanes=1, sampling=Sampling(max_new_tokens=40))
    answers, logits = {}, {}
    for fused in (False, True):
        with monkeypatch.context() as patch:
            if not fused:
                patch.setenv(SWITCH, "0")
                patch.setattr(modeling_qwen3_vl, "apply_rotary_pos_emb", reference_rotary)
                patch.setattr(modeling_qwen3_vl, "apply_rotary_pos_emb_vision", _reference_vision_rotary)
            g = TransformersGrounder.load(toy_model_path(), device="cuda")
            g.model.float()
            if fused:
                assert enable_fused_kernels(g.model) == ["rms_norm", "rotary", "vision_rotary", "swiglu"]
                assert "Liger" in type(g.model.model.language_model.norm).__name__ or hasattr(
                    g.model.model.language_model.norm, "casting_mode")
            inputs = g.processor(text=[g.processor.apply_chat_template(_conv("Locate the red circle."),
                                                                       add_generation_prompt=True, tokenize=False)],
                                 images=[_conv("")[0]["content"][0]["image"]], return_tensors="pt").to("cuda")
            with torch.inference_mode():
                logits[fused] = g.model(**inputs).logits.float()
            answers[fused] = [[s.raw_text for s in t.steps] for t in run_samples(g, samples, config, images)]
    assert torch.allclose(logits[True], logits[False], atol=1e-3, rtol=1e-3), (logits[True] - logits[False]).abs().max()
    assert answers[True] == answers[False]


def test_cuda_fused_vision_rotary_equals_transformers_in_bfloat16():
    """The vision tower's rotary on Liger's kernel: q and k as the vision attention splits them from its qkv
    projection (interleaved, not contiguous), bfloat16, 4B-shape heads; the same values as transformers' own
    function (float32 inside, rounded to bfloat16 once), and the inputs left as they were."""
    pytest.importorskip("liger_kernel")
    from ivt_core.grounders.fused_kernels import _vision_rotary

    torch.manual_seed(0)
    patches, heads, dim = 1200, 16, 64
    qkv = torch.randn(patches, 3 * heads * dim, device="cuda", dtype=torch.bfloat16)
    q, k, _ = qkv.reshape(patches, 3, heads, dim).permute(1, 0, 2, 3).unbind(0)
    angles = torch.rand(patches, dim // 2, device="cuda") * 40
    emb = torch.cat([angles, angles], dim=-1)
    before = qkv.clone()
    fused = _vision_rotary(q, k, emb.cos(), emb.sin())
    expected = _reference_vision_rotary(q, k, emb.cos(), emb.sin())
    assert torch.equal(qkv, before)
    for got, want in zip(fused, expected, strict=True):
        assert got.dtype == torch.bfloat16 and got.shape == (patches, heads, dim)
        torch.testing.assert_close(got, want, rtol=2 ** -7, atol=1e-6)
        assert (got != want).float().mean() < 0.01  # rounding differences only


def _reference_vision_rotary(q, k, cos, sin):
    """transformers' ``apply_rotary_pos_emb_vision`` (Qwen3-VL), copied: whatever fused_kernels patched."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import rotate_half

    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    q32, k32 = q.float(), k.float()
    return (q32 * cos + rotate_half(q32) * sin).to(q.dtype), (k32 * cos + rotate_half(k32) * sin).to(k.dtype)


def test_cuda_grpo_scores_the_sampled_tokens(tiny, tmp_path):
    """Two GRPO steps on CUDA through the cached engine: rollouts carry their sampled ids, the update runs."""
    import json

    from ivt_core.config.training import GRPOConfig
    from ivt_core.data.shapes_split import write_shapes_split
    from ivt_core.workspace import Workspace
    from training.grpo import train

    workspace = Workspace.open(tmp_path / "ws")
    write_shapes_split(workspace, "train", 8, seed=0)
    out = tmp_path / "grpo"
    train(GRPOConfig(workspace=str(workspace.root), base=str(tiny), out=str(out), prompts=2, group_size=2, steps=1,
                     max_steps=2, max_new_tokens=8, num_iterations=2, loss_type="dapo"))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(r["truncated"] >= 0 for r in records)
    assert (out / "adapter" / "adapter_config.json").is_file()
