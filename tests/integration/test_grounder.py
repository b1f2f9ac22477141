import pytest
from PIL import Image

from ivt_core.errors import InvalidInputError, NotFoundError
from ivt_core.grounders.base import Sampling
from ivt_core.grounders.transformers_grounder import TransformersGrounder
from tests.integration.conftest import FAMILIES

CONVENTIONS = {"qwen3_vl": "norm1000", "qwen2_5_vl": "abs_resized", "qwen2_vl": "norm1000"}


def _conv(text, size=(224, 160)):
    image = Image.new("RGB", size, (120, 30, 200))
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_each_family_with_its_convention(tiny_models, family):
    g = TransformersGrounder.load(tiny_models[family], device="cpu")
    assert g.family.name == family and g.family.convention == CONVENTIONS[family]
    answers = g.predict([_conv("Locate the red circle."), _conv("Find it", (100, 300))], Sampling(max_new_tokens=5))
    assert len(answers) == 2 and all(a.tokens_in > 0 and 1 <= a.tokens_out <= 5 for a in answers)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_matches_single(tiny_models, family):
    g = TransformersGrounder.load(tiny_models[family], device="cpu")
    long = _conv("Locate the small red circle left of the blue square, please, carefully.")
    short = _conv("Locate it.")
    sampling = Sampling(max_new_tokens=6)
    batched = [a.text for a in g.predict([long, short], sampling)]
    alone = [g.predict([c], sampling)[0].text for c in (long, short)]
    assert batched == alone


@pytest.mark.parametrize("size", [(640, 480), (100, 300), (224, 224)])
def test_qwen25_resized_size_matches_processor(tiny_models, size):
    g = TransformersGrounder.load(tiny_models["qwen2_5_vl"], device="cpu")
    out = g.processor.image_processor(images=[Image.new("RGB", size)], return_tensors="pt")
    _, grid_h, grid_w = out["image_grid_thw"][0].tolist()
    w, h = g.resized_size(*size)
    assert (w, h) == (grid_w * 14, grid_h * 14) and w % 28 == 0 and h % 28 == 0


def test_lora_adapter_loads(tiny_models, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(tiny_models["qwen3_vl"])
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    g = TransformersGrounder.load(tiny_models["qwen3_vl"], adapter=tmp_path / "adapter", device="cpu")
    assert "adapter" in g.name and len(g.predict([_conv("x")], Sampling(max_new_tokens=2))) == 1


def test_four_bit_loading_on_cpu(tiny_models):
    g = TransformersGrounder.load(tiny_models["qwen3_vl"], load_in_4bit=True, device="cpu")
    assert any("4bit" in type(m).__name__ for m in g.model.modules())
    assert len(g.predict([_conv("x")], Sampling(max_new_tokens=2))) == 1


def test_not_a_vlm(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(InvalidInputError, match="not a vision-language"):
        TransformersGrounder.load(tmp_path)


def test_missing_folder_and_not_a_checkpoint(tmp_path):
    with pytest.raises(NotFoundError):
        TransformersGrounder.load(tmp_path / "nope")
    with pytest.raises(InvalidInputError, match="no config.json"):
        TransformersGrounder.load(tmp_path)


def test_bad_adapter_folder(tiny_models, tmp_path):
    with pytest.raises(InvalidInputError, match="adapter"):
        TransformersGrounder.load(tiny_models["qwen3_vl"], adapter=tmp_path, device="cpu")


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_batched_vision_attention_changes_nothing(tiny_models, family):
    import torch
    from transformers import AutoModelForImageTextToText

    from ivt_core.grounders.fast_vision import enable_batched_vision_attention
    from ivt_core.grounders.processing import load_processor

    processor = load_processor(tiny_models[family], family)
    images = [Image.new("RGB", (224, 224), c) for c in ("red", "blue", "green")]
    texts = [processor.apply_chat_template(_conv("x"), add_generation_prompt=True, tokenize=False)] * 3
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    model = AutoModelForImageTextToText.from_pretrained(tiny_models[family])
    with torch.no_grad():
        before = model(**batch).logits
        assert enable_batched_vision_attention(model) > 0
        after = model(**batch).logits
    assert torch.allclose(before, after, atol=1e-5)


def test_fast_vision_put_on_twice_patches_once_and_keeps_the_stock_code_where_it_falls_back(tiny_models):
    """The trainers and the grounder may both put the vision patches on one model: a second call patches nothing
    more, and the fallbacks (the CPU, training, with autograd) still reach transformers' own forward (a module
    patched twice called itself as its "stock" forward)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from ivt_core.grounders.fast_vision import enable_fast_vision
    from ivt_core.grounders.processing import load_processor

    processor = load_processor(tiny_models["qwen3_vl"], "qwen3_vl")
    images = [Image.new("RGB", (224, 224), c) for c in ("red", "blue")]
    texts = [processor.apply_chat_template(_conv("x"), add_generation_prompt=True, tokenize=False)] * 2
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    model = AutoModelForImageTextToText.from_pretrained(tiny_models["qwen3_vl"])
    with torch.no_grad():
        before = model(**batch).logits
    layers = model.config.vision_config.depth
    assert enable_fast_vision(model) == 2 * layers + 1  # attentions, MLPs, the patch embedding
    assert enable_fast_vision(model) == 1  # only the patch embedding (patching it again changes nothing)
    model.train()
    after = model(**batch).logits  # training, autograd on: every fallback taken
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_the_patch_embedding_as_a_matrix_product_changes_nothing(tiny_models, family):
    """The vision patch embedding's convolution (kernel = stride = one patch) as one matrix product over the same
    weights: the same embeddings, and gradients still reach the convolution's own weight (training uses it)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from ivt_core.grounders.fast_vision import enable_linear_patch_embed
    from ivt_core.grounders.processing import load_processor

    processor = load_processor(tiny_models[family], family)
    batch = processor.image_processor(images=[Image.new("RGB", (224, 224), c) for c in ("red", "blue")],
                                      return_tensors="pt")
    pixels = batch["pixel_values"] + torch.randn_like(batch["pixel_values"])  # not a flat colour: every weight counts
    model = AutoModelForImageTextToText.from_pretrained(tiny_models[family])
    embed = next(m for m in model.modules() if type(m).__name__.endswith("VisionPatchEmbed"))
    before = embed(pixels)
    assert enable_linear_patch_embed(model) == 1
    after = embed(pixels)
    assert after.shape == before.shape
    assert torch.allclose(before, after, atol=1e-5)
    after.square().sum().backward()
    assert embed.proj.weight.grad is not None and embed.proj.weight.grad.abs().sum() > 0
