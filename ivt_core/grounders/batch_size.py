"""How many conversations the cached engine keeps in flight when the user asks for ``--batch-size auto``."""

from __future__ import annotations

import torch


def auto_batch_size(model, processor, image_size: tuple[int, int], steps: int, max_new_tokens: int, device: str,
                    fraction: float = 0.5, most: int = 256) -> int:
    """How many conversations to keep in flight: on a GPU, as many as ``fraction`` of its free memory holds
    (each one's KV cache at its longest, (T+1) x (image tokens + ~64 text tokens + the answer), counted 2.5
    times: the compaction copy and the prefill's activations); on a CPU, 16."""
    if not str(device).startswith("cuda"):
        return 16
    text = model.config.get_text_config()
    dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    width = model.get_output_embeddings().weight.element_size()
    per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * dim * width
    grid = processor.image_processor(images=[_blank(image_size)], return_tensors="pt")["image_grid_thw"][0]
    image_tokens = int(grid.prod()) // processor.image_processor.merge_size**2
    tokens = (steps + 1) * (image_tokens + 64 + max_new_tokens)
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return max(1, min(most, int(fraction * free / (2.5 * per_token * tokens))))


def _blank(size: tuple[int, int]):
    from PIL import Image

    return Image.new("RGB", size)

