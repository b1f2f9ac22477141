import numpy as np
import pytest
import torch
from PIL import Image

from ivt_core.supervision import IGNORE, build_example, build_text_example, collate, patchify_on_device


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    from ivt_core.grounders.processing import load_processor
    from ivt_core.tinykit import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("sup") / "q3", "qwen3_vl")
    return load_processor(folder, "qwen3_vl")


def _conv(image, answer='{"bbox_2d": [1, 2, 3, 4]}'):
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Find it"}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]}]


def _image(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (224, 224, 3), dtype=np.uint8))


def test_loss_only_on_answer(processor):
    e = build_example(processor, _conv(_image()))
    trained = processor.tokenizer.decode(e["input_ids"][e["labels"] != IGNORE])
    assert trained.startswith('{"bbox_2d": [1, 2, 3, 4]}<|im_end|>')


def test_text_example_equals_full_example(processor):
    full = build_example(processor, _conv(_image()))
    text = build_text_example(processor, _conv(_image()), [(224, 224)])
    for key in ("input_ids", "labels", "mm_token_type_ids", "image_grid_thw"):
        assert torch.equal(full[key].to(text[key].dtype), text[key]), key


def test_patchify_on_device_equals_processor(processor):
    images = [_image(1), _image(2)]
    expected = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    batch = torch.from_numpy(np.stack([np.asarray(i) for i in images]))
    assert torch.allclose(patchify_on_device(batch, processor.image_processor), expected, atol=1e-5)


def test_collate_right_pads(processor):
    a = build_example(processor, _conv(_image(), "[1, 2, 3, 4]"))
    b = build_example(processor, _conv(_image(), '{"bbox_2d": [100, 200, 300, 400]} and more text'))
    batch = collate([a, b], processor.tokenizer.pad_token_id)
    assert batch["attention_mask"][0].sum() == a["input_ids"].shape[0]
    assert (batch["labels"][0][batch["attention_mask"][0] == 0] == IGNORE).all()
