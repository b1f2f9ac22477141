"""Offline tiny-model kit: random-weight checkpoints of the real Qwen-VL architectures, built from nothing.

``build_tiny_model(out, family)`` writes a folder that loads like a real checkpoint
(``AutoModelForImageTextToText.from_pretrained`` plus ``processing.load_processor``) with no network: the real
model class at toy dimensions, its own byte-level BPE tokenizer (Qwen's special tokens in Qwen's order), the
family's image processor settings and a Qwen-style chat template. Tests use it; the toy model of the embedded
default is trained from the same kit. Why not download a tiny test checkpoint: nothing can be downloaded here.

Command: ``ivt tiny-model OUT --family qwen3_vl|qwen2_5_vl|qwen2_vl``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ivt_core.errors import InvalidInputError
from ivt_core.families import get_family

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
QWEN3_EXTRA = ["<tool_call>", "</tool_call>", "<think>", "</think>"]

QWEN2_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

QWEN3_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Dimensions of a kit model. The defaults give a ~1 MB model for tests."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    vision_hidden: int = 64
    vision_depth: int = 2
    vision_heads: int = 4
    vocab: int = 1024
    min_pixels: int = 56 * 56
    max_pixels: int = 224 * 224
    seed: int = 0
    init_std: float = 0.02  # weight init; larger gives answers that vary with the input (equality tests)


def _corpus(seed: int) -> list[str]:
    """Text the tokenizer is trained on: prompts, expressions, JSON boxes, numbers, reasoning words."""
    from ivt_core.data.shapes import COLOURS, KINDS, ORDINALS, RELATIONS
    from ivt_core.prompts import PROMPTS

    rng = random.Random(seed)
    lines = []
    for prompt in PROMPTS.values():
        lines += [prompt.ground, prompt.refine] * 20
    words = ["box", "covers", "move", "left", "right", "up", "down", "larger", "smaller", "shrink", "grow",
             "the", "is", "correct", "edge", "top", "bottom", "object", "shape", "target", "should", "it",
             "a", "of", "and", "too", "wide", "tall", "narrow", "short", "slightly", "far", "instead"]
    for _ in range(3000):
        colour, kind = rng.choice(list(COLOURS)), rng.choice(KINDS)
        other = f"{rng.choice(list(COLOURS))} {rng.choice(KINDS)}"
        expr = rng.choice([
            f"the {colour} {kind}", f"the {rng.choice(['small', 'large'])} {colour} {kind}",
            f"the {colour} {kind} {rng.choice(list(RELATIONS))} the {other}",
            f"the {rng.choice(ORDINALS)} {kind} from the {rng.choice(['top', 'bottom', 'left', 'right'])}",
        ])
        nums = sorted(rng.randint(0, 999) for _ in range(4))
        box = json.dumps({"bbox_2d": [nums[0], nums[1], nums[2], nums[3]]})
        prose = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        lines.append(f'{expr} {box} {prose}. The box is correct. ({nums[0]},{nums[1]}),({nums[2]},{nums[3]})')
    lines += [str(i) for i in range(1000)] * 3
    return lines


def build_tokenizer(family: str, vocab: int, seed: int = 0):
    """A byte-level BPE tokenizer with Qwen's special tokens first, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIAL_TOKENS + (QWEN3_EXTRA if family == "qwen3_vl" else [])
    tok = Tokenizer(models.BPE())
    # Digits one by one, as Qwen's own tokenizers do: a coordinate is read and written digit by digit.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        model_max_length=32768,
    )
    wrapped.padding_side = "left"
    return wrapped


def _model_config(family: str, spec: TinySpec, tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig

    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    vocab = (len(tokenizer) + 63) // 64 * 64
    head_dim = spec.hidden // spec.heads
    text = dict(
        vocab_size=vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
        max_position_embeddings=4096, tie_word_embeddings=True, initializer_range=spec.init_std,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    quarter = head_dim // 2
    if family == "qwen3_vl":
        section = [quarter - 2 * (quarter // 4), quarter // 4, quarter // 4]
        text.update(head_dim=head_dim,
                    rope_parameters={"rope_type": "default", "rope_theta": 5_000_000,
                                     "mrope_interleaved": True, "mrope_section": section})
        vision = dict(depth=spec.vision_depth, hidden_size=spec.vision_hidden,
                      intermediate_size=spec.vision_hidden * 2, num_heads=spec.vision_heads, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=spec.hidden,
                      num_position_embeddings=256,
                      deepstack_visual_indexes=list(range(min(spec.vision_depth, 3))))
        return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    section = [quarter - 2 * (quarter * 3 // 8), quarter * 3 // 8, quarter * 3 // 8]
    text.update(rope_parameters={"rope_type": "default", "rope_theta": 1_000_000, "mrope_section": section})
    if family == "qwen2_5_vl":
        vision = dict(depth=spec.vision_depth, hidden_size=spec.vision_hidden,
                      intermediate_size=spec.vision_hidden * 2, num_heads=spec.vision_heads, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=spec.hidden, window_size=112,
                      fullatt_block_indexes=[spec.vision_depth - 1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    vision = dict(depth=spec.vision_depth, embed_dim=spec.vision_hidden, hidden_size=spec.hidden,
                  num_heads=spec.vision_heads, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, mlp_ratio=2)
    return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)


def build_tiny_model(out: str | Path, family: str, spec: TinySpec = TinySpec()) -> Path:
    """Write a tiny random-weight checkpoint of ``family`` to ``out``; returns the folder.

    Raises InvalidInputError for an unknown family or an ``out`` that is a non-empty folder of something else.
    """
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from ivt_core.grounders.processing import PROCESSOR_CLASSES

    get_family(family)
    if family not in PROCESSOR_CLASSES:
        raise InvalidInputError(f"the tiny-model kit builds {', '.join(PROCESSOR_CLASSES)}; not {family!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "config.json").exists())):
        raise InvalidInputError(f"{out} exists and is not an empty folder or a checkpoint; choose another path")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(family, spec.vocab, spec.seed)
    torch.manual_seed(spec.seed)
    model = AutoModelForImageTextToText.from_config(_model_config(family, spec, tokenizer))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    patch = get_family(family).patch
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}, patch_size=patch,
        temporal_patch_size=2, merge_size=2,
    )
    template = QWEN3_TEMPLATE if family == "qwen3_vl" else QWEN2_TEMPLATE
    processor = PROCESSOR_CLASSES[family](image_processor=image_processor, tokenizer=tokenizer, chat_template=template)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    image_processor.save_pretrained(out)
    (out / "chat_template.jinja").write_text(template)
    (out / "ivt_kit.json").write_text(json.dumps({"family": family, "spec": spec.__dict__}, indent=1))
    return out
