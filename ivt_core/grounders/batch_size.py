"""How many conversations the cached engine keeps in flight when the user asks for ``--batch-size auto``."""

from __future__ import annotations

import torch

# per conversation, its KV cache at its longest times this: what a run's peak memory held per conversation beyond the
# weights (4B shape, H200, 505 conversations in one lane, T=2: 104.6 GB at peak, 1.01x the caches at their longest;
# the compaction rebuilds the cache layer by layer, so it holds the old cache plus its growth and about a layer:
# docs/LOG.md, sessions 27 and 28), with room for the decode graph's buffers; the prefill's activations (a chunk of
# ~16k tokens) come out of the free memory left over (1 - ``fraction``)
PER_CONVERSATION = 1.25


def auto_batch_size(model, processor, image_size: tuple[int, int], steps: int, max_new_tokens: int, device: str,
                    fraction: float = 0.8, most: int = 512) -> int:
    """How many conversations to keep in flight: on a GPU, as many as ``fraction`` of its free memory holds (each
    one's KV cache at its longest, (T+1) x (image tokens + ~64 text tokens + the answer), counted
    ``PER_CONVERSATION`` times), at most ``most``; on a CPU, 16. Until session 28 it counted each cache 2.5 times
    in half the free memory (a whole copy during the compaction), which kept a 4B model on an H200 at ~150
    conversations, far slower per sample than the ~480 that fit (the decode reads the weights once per step for
    all of them)."""
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
    return max(1, min(most, int(fraction * free / (PER_CONVERSATION * per_token * tokens))))


def _blank(size: tuple[int, int]):
    from PIL import Image

    return Image.new("RGB", size)

