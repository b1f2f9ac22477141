"""A Qwen3-VL prefill with images that never makes the CPU wait for the GPU.

Why not the model's own forward: given ``pixel_values`` and ``image_grid_thw`` on the GPU, transformers' Qwen3-VL
reads values back from the GPU several times per forward before it can queue the next kernels. The vision tower's
helpers do (``get_vision_position_ids``: ``grid_thw.tolist()`` and a loop of small kernels per image;
``get_vision_interpolation_indices_and_weights`` and ``get_vision_cu_seqlens``: ``repeat_interleave`` with counts
on the GPU), so do the split of the image features (``.tolist()``) and the placeholder count check, and so does
the DeepStack merge in the first language layers (boolean indexing: a ``nonzero`` each). Each read drains the
GPU's queue, and whatever the CPU does next runs with the GPU idle. Profiled on an H200 (docs/LOG.md, sessions
14-15); with the reads gone the GPU still drains while cuDNN builds an attention plan for a new shape, so this
removes one cause of the prefill's idle time, not all of it.

Here the same computation is queued without them. The vision helpers are transformers' own functions, run on the
CPU over the grids the engine already has there (each image's part once per grid, concatenated and copied to the
GPU once per list of grids: a batch of equal images repeats them chunk after chunk), and handed to the vision tower
through the keyword arguments those helpers read precomputed values from. The image features replace the
placeholder tokens' embeddings at indices computed on the CPU from the token ids (``index_copy_``: the rows
``masked_scatter`` fills, in its order). The DeepStack merge takes those indices (``_deepstack_by_index``: gather,
add, scatter, with the boolean version's numbers). The placeholder count is checked on the CPU. The language model
is then called as the model's forward calls it. Only for Qwen3-VL (the cached engine's family); elsewhere
``supported`` says why not and the engine calls the model's forward.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass

import torch


def supported(inner) -> str | None:
    """None if ``inner`` (the Qwen3-VL base model under any wrapper) can be prefilled here, else why not."""
    try:
        from transformers import vision_utils
    except ImportError:
        return "this transformers has no vision_utils (its precompute helpers)"
    visual = getattr(inner, "visual", None)
    language = getattr(inner, "language_model", None)
    if visual is None or language is None or not hasattr(language, "_deepstack_process"):
        return f"{type(inner).__name__} is not a Qwen3-VL model"
    needed = ("get_vision_cu_seqlens", "get_vision_position_ids", "get_vision_interpolation_indices_and_weights")
    if not all(hasattr(vision_utils, name) for name in needed):
        return "transformers' vision_utils lacks the precompute helpers"
    if not all(hasattr(visual, name) for name in ("num_grid_per_side", "interpolation_mode",
                                                   "interpolation_align_corners", "spatial_merge_size")):
        return "the vision tower does not resample a learned position grid"
    return None


@dataclass
class VisionInputs:
    """What the vision tower's helpers compute from the grids, precomputed (on the GPU unless said otherwise)."""

    grid: torch.Tensor
    cu_seqlens: torch.Tensor  # on the CPU where every vision attention is ``fast_vision``'s (it reads its lengths)
    position_ids: torch.Tensor
    interp_indices: torch.Tensor
    interp_weights: torch.Tensor
    max_seqlen: int  # the longest image's patches (flash attention's argument; others ignore it)

    def kwargs(self) -> dict:
        return {"cu_seqlens": self.cu_seqlens, "max_seqlen": self.max_seqlen, "position_ids": self.position_ids,
                "interp_indices": self.interp_indices, "interp_weights": self.interp_weights}


class ImagePrefill:
    """Prefill forwards of one Qwen3-VL model (``inner``) on ``device``, without reading anything back."""

    def __init__(self, inner, image_token_id: int, device):
        self.image_token_id, self.device = image_token_id, torch.device(device)
        self.visual, self.language = inner.visual, inner.language_model
        self._vision_inputs: dict[tuple, VisionInputs] = {}
        enable_deepstack_by_index(self.language)

    def vision_inputs(self, grids: list[torch.Tensor]) -> VisionInputs:
        """The vision helpers' results for these (CPU) grids, computed once per distinct list of grids."""
        from transformers import vision_utils

        key = tuple(tuple(int(v) for v in g) for g in grids)
        found = self._vision_inputs.get(key)
        if found is not None:
            return found
        visual = self.visual
        grid = torch.tensor(key)
        # each image's part depends on its own grid alone: computed once per grid, concatenated per list
        parts = [self._per_image(g) for g in key]
        indices, weights, positions = (torch.cat([part[i] for part in parts]) for i in range(3))
        cu_seqlens = vision_utils.get_vision_cu_seqlens(grid)
        # fast_vision's batched attention reads the images' lengths from cu_seqlens: on the CPU that is free
        cpu_lengths = all(hasattr(module, "_ivt_stock_forward") for module in visual.modules()
                          if type(module).__name__.endswith("VisionAttention"))
        found = VisionInputs(
            grid=self._to_device(grid), cu_seqlens=cu_seqlens if cpu_lengths else self._to_device(cu_seqlens),
            position_ids=self._to_device(positions), interp_indices=self._to_device(indices),
            interp_weights=self._to_device(weights), max_seqlen=int((cu_seqlens[1:] - cu_seqlens[:-1]).max()))
        if len(self._vision_inputs) > 64:  # a long run of varied image sizes: keep the recent ones
            self._vision_inputs.pop(next(iter(self._vision_inputs)))
        self._vision_inputs[key] = found
        return found

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one prefill per engine, kept as long as the engine
    def _per_image(self, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """transformers' interpolation indices and weights and rotary position ids of one image of this grid."""
        from transformers import vision_utils

        visual = self.visual
        one = torch.tensor([grid])
        indices, weights = vision_utils.get_vision_interpolation_indices_and_weights(
            one, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
            align_corners=visual.interpolation_align_corners, spatial_merge_size=visual.config.spatial_merge_size)
        return indices, weights, vision_utils.get_vision_position_ids(one, visual.spatial_merge_size)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return to_device(tensor, self.device)

    def forward(self, block_cpu: torch.Tensor, block: torch.Tensor, pixels: list[torch.Tensor],
                grids: list[torch.Tensor], **language_kwargs):
        """The language model's output for ``block`` (ids on the device; ``block_cpu`` the same on the CPU) with
        its images: ``pixels`` holds each image's rows and ``grids`` their CPU grids, both in the block's order of
        placeholders (row by row)."""
        embeds = self.language.get_input_embeddings()(block)
        deepstack = index = None
        if pixels:
            merge = self.visual.spatial_merge_size ** 2
            expected = sum(int(g.prod()) // merge for g in grids)
            placeholders = (block_cpu.reshape(-1) == self.image_token_id).nonzero().squeeze(1)  # flat, in order
            if len(placeholders) != expected:
                raise ValueError(f"image features and image tokens do not match: {len(placeholders)} placeholder "
                                 f"tokens for {len(grids)} images of {expected} tokens")
            inputs = self.vision_inputs(grids)
            pixel_values = torch.cat(pixels).to(self.visual.dtype)
            vision = self.visual(pixel_values, grid_thw=inputs.grid, return_dict=True, **inputs.kwargs())
            index = self._to_device(placeholders)
            flat = embeds.view(-1, embeds.shape[-1])
            flat.index_copy_(0, index, vision.pooler_output.to(flat.dtype))
            deepstack = list(vision.deepstack_features)
        return self.language(input_ids=None, inputs_embeds=embeds, visual_pos_masks=index,
                             deepstack_visual_embeds=deepstack, **language_kwargs)


def pinned(tensor: torch.Tensor, on_gpu: bool) -> torch.Tensor:
    """``tensor`` in page-locked memory when it is going to a GPU (``to_device`` then copies it without pinning
    again), else as it is."""
    return tensor.pin_memory() if on_gpu else tensor


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """A CPU tensor on ``device``; to a GPU through page-locked memory, without waiting: a plain ``.to("cuda")`` of
    pageable memory waits until the stream has run everything queued before it (on an H200 the engine's first such
    copy in a step waited for the whole compaction, with the CPU's next work not yet queued)."""
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return (tensor if tensor.is_pinned() else tensor.pin_memory()).to(device, non_blocking=True)


def _deepstack_by_index(self, hidden_states, visual_pos_masks, visual_embeds):
    """``_deepstack_process`` with the image tokens' flat indices instead of a boolean mask (``ImagePrefill``):
    the same rows get the same sums, without the ``nonzero`` a boolean index needs. A mask goes to the model's own."""
    if visual_pos_masks.dtype == torch.bool:
        return self._ivt_stock_deepstack(hidden_states, visual_pos_masks, visual_embeds)
    flat = hidden_states.reshape(-1, hidden_states.shape[-1])
    summed = flat.index_select(0, visual_pos_masks) + visual_embeds.to(flat.device, flat.dtype)
    return flat.index_copy(0, visual_pos_masks, summed).view_as(hidden_states)


def enable_deepstack_by_index(language_model) -> None:
    """Let ``language_model`` (Qwen3-VL's text model, this instance only) take the image tokens' flat indices as
    ``visual_pos_masks``; boolean masks work as before."""
    if getattr(language_model, "_ivt_stock_deepstack", None) is None:
        language_model._ivt_stock_deepstack = language_model._deepstack_process
        language_model._deepstack_process = types.MethodType(_deepstack_by_index, language_model)
