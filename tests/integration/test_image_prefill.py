"""The engine's prefill without reads from the GPU (``image_prefill``) computes what the model's forward computes."""

import pytest
import torch
from PIL import Image

from ivt_core.grounders import image_prefill


@pytest.fixture(scope="module")
def chatty_qwen3(tmp_path_factory):
    from ivt_core.tinykit import TinySpec, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("prefill") / "m", "qwen3_vl", TinySpec(init_std=1.0))


def _batch(grounder, sizes):
    """Two conversations with images of ``sizes``, right-padded into one block as the engine pads its steps."""
    from ivt_core.supervision import image_inputs

    processor = grounder.processor
    images = [Image.new("RGB", size, (40 * i, 200 - 30 * i, 90)) for i, size in enumerate(sizes)]
    texts = []
    for image in images:
        conversation = [{"role": "user", "content": [{"type": "image", "image": image},
                                                     {"type": "text", "text": "Where is the red square?"}]}]
        texts.append(processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False))
    pixels, grids = image_inputs(processor, images)
    ids = []
    merge = processor.image_processor.merge_size ** 2
    for text, grid in zip(texts, grids, strict=True):
        row = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        at = row.index(processor.image_token_id)
        ids.append(row[:at] + [processor.image_token_id] * (int(grid.prod()) // merge) + row[at + 1:])
    width = max(len(row) for row in ids)
    block = torch.full((len(ids), width), processor.tokenizer.pad_token_id or 0, dtype=torch.long)
    for index, row in enumerate(ids):
        block[index, :len(row)] = torch.tensor(row)
    return block, list(pixels.split([int(g.prod()) for g in grids])), list(grids)


@pytest.mark.parametrize("sizes", [[(96, 64), (96, 64)], [(96, 64), (64, 128)]])
def test_image_prefill_equals_the_models_forward(chatty_qwen3, sizes):
    """Hidden states of a block with images (equal sizes: the batched vision attention; unequal: its fallback)
    through ``ImagePrefill`` and through the model's forward, float32: equal."""
    from ivt_core.grounders.engine import _inner_model
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    grounder = TransformersGrounder.load(chatty_qwen3, device="cpu")
    inner = _inner_model(grounder.model)
    assert image_prefill.supported(inner) is None
    block, pixels, grids = _batch(grounder, sizes)
    positions = torch.arange(block.shape[1]).expand(3, *block.shape)  # any positions: the same for both
    with torch.inference_mode():
        expected = inner(input_ids=block, pixel_values=torch.cat(pixels), image_grid_thw=torch.stack(grids),
                         position_ids=positions).last_hidden_state
        prefill = image_prefill.ImagePrefill(inner, grounder.processor.image_token_id, "cpu")
        got = prefill.forward(block, block, pixels, grids, position_ids=positions).last_hidden_state
        again = prefill.forward(block, block, pixels, grids, position_ids=positions).last_hidden_state  # cached
    assert len(prefill._vision_inputs) == 1
    assert torch.equal(got, expected), (got - expected).abs().max()  # on one device the very same operations
    assert torch.equal(got, again)


def test_image_prefill_refuses_a_block_whose_placeholders_do_not_match_its_images(chatty_qwen3):
    from ivt_core.grounders.engine import _inner_model
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    grounder = TransformersGrounder.load(chatty_qwen3, device="cpu")
    inner = _inner_model(grounder.model)
    block, pixels, grids = _batch(grounder, [(96, 64), (96, 64)])
    prefill = image_prefill.ImagePrefill(inner, grounder.processor.image_token_id, "cpu")
    with torch.inference_mode(), pytest.raises(ValueError, match="placeholder"):
        prefill.forward(block, block, pixels[:1], grids[:1])


def test_deepstack_by_index_equals_the_boolean_mask():
    """The DeepStack merge with flat indices gives the boolean version's numbers (and a mask still works)."""

    class Text:
        def _deepstack_process(self, hidden_states, visual_pos_masks, visual_embeds):
            hidden_states = hidden_states.clone()
            hidden_states[visual_pos_masks, :] = hidden_states[visual_pos_masks, :] + visual_embeds
            return hidden_states

    text = Text()
    image_prefill.enable_deepstack_by_index(text)
    image_prefill.enable_deepstack_by_index(text)  # twice: still the model's own underneath
    hidden = torch.randn(3, 7, 5)
    mask = torch.rand(3, 7) < 0.5
    embeds = torch.randn(int(mask.sum()), 5)
    expected = Text()._deepstack_process(hidden, mask, embeds)
    index = torch.nonzero(mask.reshape(-1), as_tuple=True)[0]
    assert torch.equal(text._deepstack_process(hidden, index, embeds), expected)
    assert torch.equal(text._deepstack_process(hidden, mask, embeds), expected)
