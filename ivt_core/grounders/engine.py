"""The cached loop engine: conversations stay in a KV cache between steps; only new tokens are encoded.

The plain path (``TransformersGrounder.predict``) re-encodes a whole conversation, every image included, at
each step and runs ``generate`` on fixed batches. Here every conversation in flight owns a row of one batched
KV cache. At each step the engine tokenizes the conversation exactly as the plain path would (chat template,
image placeholders expanded to the same number of tokens), compares the ids with those already in the row's
cache, and encodes only what differs: normally the end of the previous answer, the new user turn (the
rendered image and the refine prompt) and the generation prompt. If re-tokenizing an answer gives other ids
than were generated, the row is cut back to the longest common prefix, so the model always sees the very
tokens the plain path feeds it. With greedy decoding both produce the same tokens (tested on tiny models).

Rows are independent: a conversation that ends (``release``) frees its row and a new one takes it at the next
step (continuous batching, driven by ``ivt_core.loop``). Before each step the cache is compacted: each row's
live entries are gathered to the left-padded front of a fresh cache, so the holes left by finished answers
and released rows never accumulate. The new tokens of a step are placed right-padded in one block (a padding
query then always sees real keys before it, so no attention row is fully masked) and the logits are read at
each row's last real token. Positions are given explicitly: Qwen3-VL's 3-D rotary positions, computed as the
model's own ``get_rope_index`` does (``ivt_core.rope``, checked against it) for the new part only (kept with
each conversation's ids, the new part's follow the kept part's), so holes in the cache change nothing. All rows'
texts are tokenized in one call.

The prefill encodes the rows in chunks of about ``PREFILL_CHUNK_TOKENS`` new tokens, one forward each, into views
of the chunk's rows of the cache. On a GPU the images of a chunk are read (PIL to a page-locked batch, then
patchified on the GPU) only after the previous chunk's forward has been queued, so the CPU's part of a step, most of
it reading rendered images, runs while the GPU encodes (without lanes; measured in docs/LOG.md). A forward reads
nothing back from the GPU (``image_prefill``: the vision tower's helper values come from the CPU, the image features
go in by index), so the CPU keeps queueing work ahead of it.

Each row has a fixed size for the whole step (its history, the block and room for ``max_new_tokens``) and the
model writes its keys and values in place, so on a GPU one decode step is captured once as a CUDA graph and
replayed for every token (the eager decode step is CPU-bound: ~85-130 ms for a 4B model at batch 128).

Why not ``generate``: it cannot keep per-row caches with holes, release rows or add rows mid-run; the decode
loop here is a plain greedy / temperature+top-p sampler over the same logits, with the generation config's
``min_new_tokens`` (the checkpoints' other processors are not applied; ``supports`` refuses a repetition
penalty).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Hashable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from ivt_core import rope
from ivt_core.families import FAMILIES
from ivt_core.grounders import cache_gather, graph_capture, image_prefill, prefill_attention
from ivt_core.grounders.base import Generation, Sampling, chat_text, conversation_images
from ivt_core.grounders.deferred_pixels import PendingPixels, PendingRow, resolved

# the model types of the families the engine runs (``Family.cached_engine``)
SUPPORTED_MODEL_TYPES = tuple(t for family in FAMILIES.values() if family.cached_engine for t in family.model_types)
GRAPH_MIN_TOKENS = 16  # below this many decode steps per call, capturing a graph costs more than it saves
PREFILL_CHUNK_TOKENS = 16384  # new tokens per prefill forward (``prefill_chunks``): enough to keep an H200 busy
CHECK_EVERY = 4  # decode steps between two reads of whether every row has ended (each read waits for the GPU)
# a step's block width and cache capacity are rounded up to these, so that steps of a long run meet the same
# attention shapes again: cuDNN builds an execution plan on the CPU for every new shape (42-74 ms on an H200,
# with the GPU drained meanwhile: docs/LOG.md, session 15); the padding costs a few masked slots per row
BLOCK_STEP = 16
CAPACITY_STEP = 128


def supports(grounder) -> str | None:
    """None if the engine can run this grounder's model, else why not (the plain loop is used then)."""
    model = getattr(grounder, "model", None)
    if model is None or not hasattr(grounder, "processor"):
        return "not a local transformers model"
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return f"model type {getattr(config, 'model_type', None)!r} (the engine supports {SUPPORTED_MODEL_TYPES})"
    penalty = getattr(getattr(model, "generation_config", None), "repetition_penalty", None)
    if penalty not in (None, 1.0):
        return f"the checkpoint asks for repetition_penalty {penalty}"
    return None


def _rows_layer_class():
    from transformers.cache_utils import DynamicLayer

    class RowsLayer(DynamicLayer):
        """A cache layer of fixed size [rows, heads, capacity, dim]: ``update`` writes the new keys and values
        at the engine's ``write_at`` slots and returns the buffers (the engine's 4-D mask says which slots are
        live): whole in the decode (fixed shapes and in-place writes are what lets a decode step be replayed as
        a CUDA graph; ``write_at`` a tensor of slots), up to ``attend`` slots in the prefill (the room for the
        answers is never attended to there; ``write_at`` a slice, written as one strided copy)."""

        def __init__(self, engine, keys: torch.Tensor, values: torch.Tensor):
            super().__init__()
            self.engine = engine
            self.keys, self.values = keys, values
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            at = self.engine.write_at
            if isinstance(at, slice):
                self.keys[:, :, at] = key_states
                self.values[:, :, at] = value_states
            else:
                self.keys.index_copy_(2, at, key_states)
                self.values.index_copy_(2, at, value_states)
            attend = self.engine.attend
            if attend is None:
                return self.keys, self.values
            return self.keys[:, :, :attend], self.values[:, :, :attend]

        def get_seq_length(self) -> int:
            return self.engine.end

    return RowsLayer


@dataclass
class _Conversation:
    """What the cache holds for one conversation: the ids fed so far and each image's grid."""

    fed: list[int] = field(default_factory=list)
    grids: list[torch.Tensor] = field(default_factory=list)  # one (t, h, w) row per image, in order
    row: int | None = None  # its row in the current cache, None before its first step
    positions: torch.Tensor = field(default_factory=lambda: torch.zeros(3, 0, dtype=torch.long))  # of ``fed``


class CachedEngine:
    """Answers the next turn of many conversations, each kept in a KV cache between calls."""

    def __init__(self, model, processor, device: str, use_graphs: bool = True, pixel_cache: dict | None = None,
                 own_stream: bool = False):
        self.model = model
        self.pixel_cache = pixel_cache  # ``supervision.image_inputs``'s cache, when the caller wants the pixels
        self.processor = processor
        self.device = device
        self.tokenizer = processor.tokenizer
        self.image_token_id = processor.image_token_id
        self.merge = processor.image_processor.merge_size
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        eos = getattr(model.generation_config, "eos_token_id", None)
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])
        self.min_new_tokens = int(getattr(model.generation_config, "min_new_tokens", None) or 0)
        self.inner = _inner_model(model)
        model_rope = self.inner.get_rope_index
        self.fast_rope = rope.checked(model_rope, self.image_token_id, self.merge) is not model_rope
        self.lm_head = model.get_output_embeddings()
        # the prefill without reads from the GPU (``image_prefill``), where the model allows; why not otherwise
        self.image_prefill_off = image_prefill.supported(self.inner)
        self.image_prefill = (image_prefill.ImagePrefill(self.inner, self.image_token_id, device)
                              if self.image_prefill_off is None else None)
        self.rows_layer = _rows_layer_class()
        self.write_at = torch.zeros(1, dtype=torch.long, device=device)  # cache slots the next forward writes
        self.attend = None  # cache slots the next forward's queries may attend to (None: all; ``RowsLayer``)
        self.end = 0  # the first free slot of every row
        self.live = None  # [rows, capacity] bool: the slots a query may attend to
        self.graphs = str(device).startswith("cuda") and use_graphs
        # a lane (``loop._in_lanes``) runs on its own CUDA stream and waits only for it; nothing of its
        # preparation runs on the GPU outside its turn (``_GPU_TURN``): its pixels are patchified in the turn
        self.on_gpu = str(device).startswith("cuda")
        self.stream = torch.cuda.Stream(torch.device(device)) if own_stream and self.on_gpu else None
        self.defer_pixels = self.on_gpu  # pixels read chunk by chunk during the prefill (``_pixels``)
        self.conversations: dict[Hashable, _Conversation] = {}
        self.cache = None  # DynamicCache of RowsLayer: [rows, heads, capacity, dim] per layer
        # where the time goes (seconds, summed over steps): CPU preparation of the new tokens and images (chat
        # template, tokenizing, pixels, rope positions), then the cache compaction, the prefill forwards and the
        # decode (on a GPU the stream's time between CUDA events: the GPU's timeline, idle gaps included)
        self.stats = {"prefill_tokens": 0, "vision_patches": 0, "vision_images": 0, "decode_steps": 0,
                      "decode_kv_tokens": 0, "generated_tokens": 0, "cut_back": 0, "forwards": 0,
                      "prepare_s": 0.0, "pixels_s": 0.0, "compact_s": 0.0, "prefill_s": 0.0, "decode_s": 0.0,
                      "turn_wait_s": 0.0, "turn_s": 0.0, "turn_first": None, "turn_last": None,
                      "capture_s": 0.0}

    # -- conversation bookkeeping -------------------------------------------------------------------------
    def release(self, key: Hashable) -> None:
        """Forget a conversation; its row is reused at the next step."""
        self.conversations.pop(key, None)

    def _full_ids(self, conversations: list[list[dict]], grids: list[list[torch.Tensor]]) -> list[list[int]]:
        """The ids the plain path feeds for each conversation: chat template, then each image placeholder
        repeated to the image's token count (special tokens are atomic, so expanding after tokenizing is the
        same as the processor's expanding before). The texts are tokenized in one call (the fast tokenizer
        works through a batch in parallel)."""
        texts = [chat_text(self.processor, _template_view(c)) for c in conversations]
        out = []
        for ids, image_grids in zip(self.tokenizer(texts, add_special_tokens=False)["input_ids"], grids, strict=True):
            counts = iter(int(g.prod()) // self.merge**2 for g in image_grids)
            expanded: list[int] = []
            start = 0
            for index in (i for i, token in enumerate(ids) if token == self.image_token_id):
                expanded += ids[start:index]
                expanded += [self.image_token_id] * next(counts)
                start = index + 1
            out.append(expanded + ids[start:])
        return out

    def _pixels(self, images: list) -> tuple[list, list[torch.Tensor]]:
        """The pixel rows of each of ``images`` and their grids, as the processor gives them (on a GPU, patchified
        there: ``supervision.image_inputs``). On a GPU, images at the processor's own size (one grid cell per
        patch) get their grids now and their rows only when the prefill of their chunk needs them
        (``PendingPixels``): a chunk's images are read while the previous chunk's prefill runs on the GPU, and a
        lane's in its turn."""
        from ivt_core.grounders.processing import resized_size

        patch = getattr(self.processor.image_processor, "patch_size", None)
        if self.defer_pixels and patch and all(resized_size(self.processor, *image.size) == image.size
                                               for image in images):
            pending = PendingPixels(functools.partial(self._compute_pixels, device=self.device), images)
            grids = [torch.tensor([1, image.height // patch, image.width // patch]) for image in images]
            return [PendingRow(pending, index) for index in range(len(images))], grids
        # now, outside the GPU turn: a lane's on the CPU
        return self._compute_pixels(images, self.device if self.on_gpu and self.stream is None else None)

    def _compute_pixels(self, images: list, device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``supervision.image_inputs`` of ``images`` (with a GPU ``device``, patchified there): each image's rows
        and grid."""
        from ivt_core.supervision import image_inputs

        pixels, grids = image_inputs(self.processor, images, device, self.pixel_cache)
        return list(pixels.split([int(g.prod()) for g in grids])), list(grids)

    def _image_boundary(self, ids: list[int], grids: list[torch.Tensor], keep: int) -> tuple[int, int]:
        """Move ``keep`` back to the start of the image it falls inside (an image is encoded whole); return the
        index of the first image at or after it, and the new ``keep``."""
        start, index = 0, 0
        for count in (int(g.prod()) // self.merge**2 for g in grids):
            start = ids.index(self.image_token_id, start)
            if start + count <= keep:
                start, index = start + count, index + 1
                continue
            return index, min(keep, start)
        return index, keep

    def _positions(self, ids: list[int], grids: list[torch.Tensor]) -> torch.Tensor:
        """3-D rotary positions [3, len(ids)] of a conversation (or of a part that starts at a text token or at
        an image's first token), as the model computes them: a running position, +1 per text token and
        +max(h, w) per image. A part's positions are the whole's shifted by the position it starts at.
        ``ivt_core.rope`` computes them segment by segment where it agrees with the model's own function."""
        if self.fast_rope:
            return rope.positions(ids, grids, self.image_token_id, self.merge)
        input_ids = torch.tensor([ids])
        types = (input_ids == self.image_token_id).int()
        grid = torch.stack(grids) if grids else None
        positions, _ = self.inner.get_rope_index(input_ids, types, image_grid_thw=grid)
        return positions[:, 0]

    # -- one step -----------------------------------------------------------------------------------------
    def step(self, requests: list[tuple[Hashable, list[dict]]], sampling: Sampling | None = None) -> list[Generation]:
        """Answer the last user turn of each (key, conversation); conversations seen before reuse their cache."""
        if self.stream is None:
            return self._step(requests, sampling)
        with torch.cuda.stream(self.stream):
            return self._step(requests, sampling)

    @torch.inference_mode()
    def _step(self, requests: list[tuple[Hashable, list[dict]]], sampling: Sampling | None) -> list[Generation]:
        sampling = sampling or Sampling()
        start = time.perf_counter()
        states = [self.conversations.setdefault(key, _Conversation()) for key, _ in requests]
        news, row_pixels, row_grids, positions, row_keys = [], [], [], [], []
        seen_images = [conversation_images(conversation) for _, conversation in requests]
        # every image new to its conversation, processed in one call (an image shared by several rows, as a
        # GRPO group's scene, once): the pixel rows of each one, in order
        fresh = [image for state, images in zip(states, seen_images, strict=True)
                 for image in images[len(state.grids):]]
        rows: list[tuple[torch.Tensor, torch.Tensor]] = []
        if fresh:
            rows = list(zip(*self._pixels(fresh), strict=True))
        fresh_rows = iter(rows)
        fresh_pixels = []
        for state, images in zip(states, seen_images, strict=True):
            mine = [next(fresh_rows) for _ in images[len(state.grids):]]
            state.grids.extend(grid for _, grid in mine)
            fresh_pixels.append((images, mine))
        fulls = self._full_ids([conversation for _, conversation in requests], [s.grids for s in states])
        for state, full, (images, mine) in zip(states, fulls, fresh_pixels, strict=True):
            keep = min(_common_prefix(state.fed, full), len(full) - 1)  # at least one token to read logits at
            first, keep = self._image_boundary(full, state.grids, keep)
            needed = images[first:]  # the images whose tokens are in the part to encode (normally the new ones)
            if not needed:
                pixels_of, grids_of = [], []
            elif mine and len(mine) == len(needed):
                pixels_of, grids_of = [pixels for pixels, _ in mine], [grid for _, grid in mine]
            else:  # cut back into an image seen before: encoded again
                pixels_of, grids_of = self._pixels(needed)
            row_pixels.append(pixels_of)
            row_grids.append(grids_of)
            # rows that encode the same tokens and images from nothing (a GRPO group's G copies of a prompt)
            row_keys.append((tuple(full), tuple(id(image) for image in needed)) if keep == 0 else None)
            if keep < len(state.fed):
                self.stats["cut_back"] += 1
            news.append(full[keep:])
            # only the new part's rotary positions are computed, after the kept part's (kept with its ids)
            kept = state.positions[:, :keep]
            part = self._positions(full[keep:], state.grids[first:]) + (int(kept.max()) + 1 if keep else 0)
            state.positions = torch.cat([kept, part], dim=1)
            positions.append(part)
            state.fed = state.fed[:keep]
            if keep == 0:
                state.row = None
        # what the GPU part needs from the CPU, made now: with lanes, while another lane has the GPU
        width = _round_up(max(len(n) for n in news), BLOCK_STEP)
        staged = _Staged(self._plan_compaction(states, width + sampling.max_new_tokens),
                         *self._block(news, positions, width),
                         image_prefill.pinned(torch.stack([p[:, -1] + 1 for p in positions], dim=1), self.on_gpu))
        prepared = time.perf_counter()
        self.stats["prepare_s"] += prepared - start
        with self._turn():
            got = time.perf_counter()
            self.stats["turn_wait_s"] += got - prepared  # another lane's turn on the GPU
            generated = self._on_gpu(states, news, staged, row_pixels, row_grids, row_keys, sampling)
            released = time.perf_counter()
        # the turns on the clock (lanes' turns never overlap): outside every lane's turn the GPU has nothing queued
        self.stats["turn_s"] += released - got
        self.stats["turn_first"] = self.stats["turn_first"] or got
        self.stats["turn_last"] = released
        elapsed_ms = (time.perf_counter() - start) * 1000 / max(1, len(requests))
        results = []
        for ids, full in zip(generated, fulls, strict=True):
            results.append(Generation(text=self.tokenizer.decode(ids, skip_special_tokens=True).strip(),
                                      tokens_in=len(full), tokens_out=len(ids), latency_ms=elapsed_ms,
                                      token_ids=tuple(ids), truncated=not ids or ids[-1] not in self.eos,
                                      prompt_ids=tuple(full)))
        return results

    def _turn(self):
        """A lane's turn on the GPU (``_GPU_TURN``); nothing to wait for without lanes."""
        return _GPU_TURN if self.stream is not None else nullcontext()

    def _on_gpu(self, states, news, staged: _Staged, row_pixels, row_grids, row_keys, sampling: Sampling
                ) -> list[list[int]]:
        """The step's GPU part: compaction, prefill and decode; the generated ids of each row. Nothing in it waits
        for the GPU but the decode's reads (``_read_back``): inputs go to the GPU from page-locked memory without
        waiting (``_to_device``; made before the turn, ``_Staged``) and the parts are timed with CUDA events, so
        the CPU queues the prefill while the compaction runs and captures the decode graph while the prefill runs."""
        marks = [self._mark()]
        self._compact(states, staged.compaction)
        marks.append(self._mark())
        block_cpu = staged.block
        width = block_cpu.shape[1]
        block, block_pos, last = (self._to_device(t) for t in (block_cpu, staged.positions, staged.last))
        self.live[:, self.end:self.end + width] = self._to_device(staged.mask)
        slots = torch.arange(self.live.shape[1], device=self.device)
        causal = slots[None, :] <= (self.end + torch.arange(width, device=self.device))[:, None]  # [width, capacity]
        encoded, copy_of = self._distinct_rows(row_keys)
        cache, live = self.cache, self.live
        if copy_of is not None:  # only the distinct rows are encoded, into their own cache, then copied
            cache = self._new_cache(len(encoded), self.live.shape[1])
            rows = self._to_device(torch.tensor(encoded))
            block, block_pos, last, live = block[rows], block_pos[:, rows], last[rows], live[rows]
            block_cpu = block_cpu[encoded]
        lengths = [len(news[row]) for row in encoded]
        logits = []
        for start, stop in prefill_chunks(lengths, PREFILL_CHUNK_TOKENS):
            # the chunk's pixels are read now: on a GPU, while the previous chunk's prefill runs
            pixels_start = time.perf_counter()
            pixels = resolved([p for row in encoded[start:stop] for p in row_pixels[row]])
            self.stats["pixels_s"] += time.perf_counter() - pixels_start
            grids = [g for row in encoded[start:stop] for g in row_grids[row]]
            self.stats["vision_patches"] += sum(int(g.prod()) for g in grids)  # the vision tower's tokens
            self.stats["vision_images"] += len(grids)
            logits.append(self._prefill(self._rows_of(cache, start, stop), block_cpu[start:stop], block[start:stop],
                                        block_pos[:, start:stop], last[start:stop], live[start:stop], causal, pixels,
                                        grids))
        logits = torch.cat(logits)
        self.end += width
        if copy_of is not None:
            for layer, distinct in zip(self.cache.layers, cache.layers, strict=True):
                layer.keys.copy_(distinct.keys[copy_of])
                layer.values.copy_(distinct.values[copy_of])
            logits = logits[copy_of]
            self.stats["shared_rows"] = self.stats.get("shared_rows", 0) + len(states) - len(encoded)
        for state, new in zip(states, news, strict=True):
            state.fed.extend(new)
        self.stats["prefill_tokens"] += sum(len(news[row]) for row in encoded)
        next_cpu = staged.next_positions  # [3, rows]
        marks.append(self._mark())
        generated = self._decode(states, logits, self._to_device(next_cpu), sampling)
        marks.append(self._mark())
        for name, begin, end in zip(("compact_s", "prefill_s", "decode_s"), marks[:-1], marks[1:], strict=True):
            self.stats[name] += self._span(begin, end)
        for row, state in enumerate(states):  # the answer tokens fed back: text, one position each
            missing = len(state.fed) - state.positions.shape[1]
            if missing:
                state.positions = torch.cat([state.positions, next_cpu[:, row:row + 1] + torch.arange(missing)], dim=1)
        return generated

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return image_prefill.to_device(tensor, self.device)  # page-locked, without waiting

    @staticmethod
    def _later(value: torch.Tensor):
        """A read of ``value`` (a 0-d tensor on the GPU) for later: copied to page-locked memory behind an event, so
        reading it (``_read_back(read)``) waits only until this point of the stream, not for what is queued after."""
        host = torch.empty((), dtype=value.dtype, pin_memory=True)
        host.copy_(value, non_blocking=True)
        event = torch.cuda.Event()
        event.record()

        def read():
            event.synchronize()
            return bool(host)

        return read

    def _mark(self):
        """A point on the step's timeline: a CUDA event recorded on the stream (timing without waiting), or the
        clock on the CPU."""
        if not self.on_gpu:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _span(self, begin, end) -> float:
        """Seconds between two ``_mark``s (on a GPU the stream's time between them; ``end`` is waited for)."""
        if not self.on_gpu:
            return end - begin
        _read_back(end.synchronize)
        return begin.elapsed_time(end) / 1000

    def _plan_compaction(self, states: list[_Conversation], room: int) -> _Compaction:
        """What ``_compact`` needs from the CPU, made before the GPU turn: each row's kept length, the new rows'
        live slots and the old row each new one comes from (in page-locked memory on a GPU)."""
        lengths = [len(s.fed) if s.row is not None else 0 for s in states]
        width = max(lengths, default=0)
        capacity = _round_up(width + room, CAPACITY_STEP)
        kept = torch.tensor(lengths)
        columns = torch.arange(capacity)
        live = (columns >= width - kept[:, None]) & (columns < width)  # right-aligned at width
        src_rows = torch.tensor([s.row if length else 0 for s, length in zip(states, lengths, strict=True)])
        return _Compaction(width, capacity, *(image_prefill.pinned(t, self.on_gpu) for t in (kept, live, src_rows)))

    def _compact(self, states: list[_Conversation], plan: _Compaction) -> None:
        """Rebuild the cache with one row per request (in request order): each row's live entries gathered to
        the left-padded front, and at least the plan's room free slots after them (the step's new tokens and its
        answers; the capacity rounded up to ``CAPACITY_STEP``). Conversations not in this step lose their rows
        (they are encoded whole if they come back). Which slots of the old rows are live is read on the GPU (a
        rank of each live slot, scattered to its new column), so nothing waits for the previous step's mask.

        Layer by layer: each old layer is let go as soon as its slots are gathered, so the next layer's buffers
        reuse its memory (the allocator's, on this stream: the gather that reads it runs first). Rebuilding the
        whole cache before letting the old one go held both (4B shape, 2 lanes x 256 rows, T=2: ~48 GB new beside
        ~34 GB old per lane) and had the allocator map fresh memory for all of the new one, with the GPU idle
        while the CPU did it (docs/LOG.md, session 27)."""
        try:
            self._rebuild(states, plan)
        except BaseException:  # the old cache is partly let go: every conversation is encoded afresh next time
            self.cache = None
            self._forget(self.conversations.values())
            raise
        for index, state in enumerate(states):
            state.row = index
        kept_states = {id(state) for state in states}
        # left out of this step: its row is gone; encoded afresh when it comes back
        self._forget(other for other in self.conversations.values() if id(other) not in kept_states)

    @staticmethod
    def _forget(conversations) -> None:
        """These conversations have no row any more: encoded afresh (images included) at their next step."""
        for conversation in conversations:
            conversation.row, conversation.fed, conversation.positions = None, [], conversation.positions[:, :0]

    def _rebuild(self, states: list[_Conversation], plan: _Compaction) -> None:
        """``_compact``'s new cache, live slots and end."""
        width, capacity = plan.width, plan.capacity
        rows = len(states)
        live = self._to_device(plan.live)
        gather = bool(width and self.cache is not None)
        if not gather:
            self.cache = None  # nothing is kept: the old rows' memory is free for the new ones
            cache = self._new_cache(rows, capacity)
        else:  # every slot before ``width`` is written (left padding: a copy of some slot, never attended to)
            src_rows = self._to_device(plan.src_rows)
            length = self._to_device(plan.kept)[:, None]
            old_live = self.live[src_rows]  # [rows, old capacity]
            rank = old_live.cumsum(1)  # of each live slot among its row's, from 1
            taken = old_live & (rank <= length)  # a row cut back keeps its first ``length`` live slots
            # each taken slot's column in the new row; the others go to column ``width``, dropped after
            to = torch.where(taken, width - length + rank - 1, width)
            src_cols = torch.zeros(rows, width + 1, dtype=torch.long, device=self.device)
            src_cols.scatter_(1, to, torch.arange(old_live.shape[1], device=self.device).expand(rows, -1))
            src_cols = src_cols[:, :width]
            old_layers, self.cache = self.cache.layers, None
            buffers = []
            for index in range(len(old_layers)):
                new = (self._new_buffer(rows, capacity, width), self._new_buffer(rows, capacity, width))
                old = old_layers[index]
                cache_gather.gather_slots(new, (old.keys, old.values), src_rows, src_cols)
                old_layers[index] = old = None  # its buffers go back to the allocator for the next layers'
                buffers.append(new)
            cache = self._cache_over(buffers)
        self.cache, self.live, self.end = cache, live, width

    def _new_cache(self, rows: int, capacity: int):
        """A zeroed cache of ``rows`` x ``capacity`` slots per layer (``RowsLayer``)."""
        layers = self.model.config.get_text_config().num_hidden_layers
        return self._cache_over([(self._new_buffer(rows, capacity), self._new_buffer(rows, capacity))
                                 for _ in range(layers)])

    def _new_buffer(self, rows: int, capacity: int, filled: int = 0) -> torch.Tensor:
        """One layer's keys (or values): [rows, key/value heads, ``capacity``, head dim], zeroed from slot
        ``filled`` on (the caller writes the slots before it). Slots no query may attend to are still read by the
        prefill's attention, which weighs them by zero: they must hold finite numbers, not whatever memory held
        before."""
        text = self.model.config.get_text_config()
        dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        shape = (rows, text.num_key_value_heads, capacity, dim)
        if not filled:
            return torch.zeros(shape, dtype=self.lm_head.weight.dtype, device=self.device)
        empty = torch.empty(shape, dtype=self.lm_head.weight.dtype, device=self.device)
        empty[:, :, filled:].zero_()
        return empty

    def _rows_of(self, cache, start: int, stop: int):
        """``cache`` restricted to rows ``start:stop``: views of its buffers (what the forward writes lands in them)."""
        if start == 0 and stop == cache.layers[0].keys.shape[0]:
            return cache
        return self._cache_over([(layer.keys[start:stop], layer.values[start:stop]) for layer in cache.layers])

    def _cache_over(self, buffers: list[tuple[torch.Tensor, torch.Tensor]]):
        """A ``DynamicCache`` whose layers (``RowsLayer``) write into these (keys, values) buffers, one per layer."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        cache.layers = [self.rows_layer(self, keys, values) for keys, values in buffers]
        return cache

    def _distinct_rows(self, keys: list) -> tuple[list[int], torch.Tensor | None]:
        """The rows the prefill encodes, and for every row the index of the encoded row it copies (None: each row
        is encoded). Rows are shared only when no row has history yet (the cache is empty, so a copied row's
        cache is the whole of it) and they start the same conversation: same ids and the very same image objects
        (a GRPO group's G rollouts of one prompt; the answers then differ by sampling)."""
        if self.end or any(key is None for key in keys) or len(set(keys)) == len(keys):
            return list(range(len(keys))), None
        first: dict = {}
        encoded = [row for row, key in enumerate(keys) if first.setdefault(key, row) == row]
        slot = {row: index for index, row in enumerate(encoded)}
        return encoded, self._to_device(torch.tensor([slot[first[key]] for key in keys]))

    def _capture(self, token_in, position_in, mask, warm_up: bool):
        """One decode step captured as a CUDA graph (after two eager passes on a side stream if ``warm_up``)."""
        if warm_up:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            self.write_at.fill_(self.end)  # the warm-up writes the next free slot, which the first replay rewrites
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._step_logits(token_in, position_in, mask)
            torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with graph_capture.capturing(graph):
            logits = self._step_logits(token_in, position_in, mask)
        return graph, logits

    def _step_logits(self, token_in, position_in, mask) -> torch.Tensor:
        out = self.inner(input_ids=token_in, attention_mask=mask, position_ids=position_in,
                         past_key_values=self.cache, use_cache=True)
        return self.lm_head(out.last_hidden_state[:, -1])

    def _graphed(self, token_in, position_in, mask):
        """The decode step captured as a CUDA graph over the current buffers (re-captured at every ``step``,
        whose compaction makes new ones); None, with a note in ``stats``, if capturing fails. Only the engine's
        first capture runs the step twice eagerly before (lazy initialisation of the libraries' handles and
        kernels); a capture that fails without them is tried again after them. Under the profiler those passes
        were GPU idle time at every step (docs/LOG.md, session 14); without it the saving is within the noise."""
        for warm_up in ((True,) if not self.stats.get("graphs") else (False, True)):
            try:
                graph, logits = self._capture(token_in, position_in, mask, warm_up)
                break
            except Exception as exc:  # noqa: BLE001 - any capture failure means: warm up, or run the step eagerly
                self.stats["graph_error"] = f"{type(exc).__name__}: {exc}"[:300]
        else:
            self.graphs = False
            return None
        self.stats["graphs"] = self.stats.get("graphs", 0) + 1

        def replay() -> torch.Tensor:
            graph.replay()
            return logits.clone()

        return replay

    def _block(self, news: list[list[int]], positions: list[torch.Tensor], width: int):
        """The step's new tokens, right-padded to ``width`` in one block, with their mask (bool), positions and
        last index: on the CPU (page-locked on a GPU), made before the turn."""
        rows = len(news)
        block = torch.full((rows, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(rows, width, dtype=torch.long)
        pos = torch.zeros(3, rows, width, dtype=torch.long)
        for index, (new, p) in enumerate(zip(news, positions, strict=True)):
            block[index, :len(new)] = torch.tensor(new)
            mask[index, :len(new)] = 1
            pos[:, index, :len(new)] = p
            pos[:, index, len(new):] = p[:, -1:]  # padding repeats the last position (never attended to)
        last = torch.tensor([len(n) - 1 for n in news])
        return tuple(image_prefill.pinned(t, self.on_gpu) for t in (block, mask.bool(), pos, last))

    def _prefill(self, cache, block_cpu, block, positions, last, live, causal, pixels, grids) -> torch.Tensor:
        """Encode one chunk of rows' new tokens into ``cache`` (views of those rows); the logits at each row's last
        new token. Through ``image_prefill`` where the model allows (nothing read back from the GPU), else the
        model's own forward."""
        self.write_at = slice(self.end, self.end + block.shape[1])
        # no query of the block sees past the block: the slots after it (the answers' room) are left out of the
        # attention, up to a multiple of ``CAPACITY_STEP`` (shapes that repeat: cuDNN's plans)
        self.attend = min(live.shape[1], _round_up(self.end + block.shape[1], CAPACITY_STEP))
        mask = (live[:, None, None, :self.attend] & causal[None, None, :, :self.attend]).contiguous()
        # the same mask by its structure, for the prefill kernel (``prefill_attention``; SDPA takes ``mask``)
        rows = prefill_attention.PrefillRows.of(live, self.end)
        pixels = [p.to(self.device, non_blocking=True) for p in pixels]  # from the CPU (a lane's): staged at once
        try:
            with prefill_attention.grouped_query_attention(self.on_gpu):
                if self.image_prefill is not None:
                    out = self.image_prefill.forward(block_cpu, block, pixels, grids, attention_mask=mask,
                                                     position_ids=positions, past_key_values=cache, use_cache=True,
                                                     ivt_prefill=rows)
                else:
                    out = self.inner(input_ids=block, attention_mask=mask, position_ids=positions,
                                     past_key_values=cache, use_cache=True, ivt_prefill=rows,
                                     pixel_values=torch.cat(pixels).to(self.model.dtype) if pixels else None,
                                     image_grid_thw=torch.stack(grids).to(self.device) if grids else None)
        finally:
            self.attend = None  # the decode attends to whole rows (its graph's buffers)
        self.stats["forwards"] += 1
        # logits of each row's last real token only (all positions x a 150k vocabulary would not fit)
        return self.lm_head(out.last_hidden_state[torch.arange(len(block), device=self.device), last])

    def _decode(self, states, logits, next_pos, sampling: Sampling) -> list[list[int]]:
        """Generate for every row until each has ended (an end token, or ``max_new_tokens``). The chosen tokens
        and which rows have ended stay on the device; whether all have ended is read every ``CHECK_EVERY`` steps
        (up to that many - 1 forwards too many, on masked slots), and the tokens come to the CPU once at the end:
        the CPU never waits for the GPU in between, so it queues the next steps while the GPU runs (a per-step
        transfer and Python bookkeeping over the rows made the toy's decode CPU-bound). On a GPU the step is a
        replayed CUDA graph, and each check reads the previous check's answer (``_later``): the stream keeps
        ``CHECK_EVERY`` steps queued while the CPU waits, instead of draining at every check and waiting, idle, for
        the CPU's next launches (with lanes, for the other lane's thread to let go of the GIL too); up to
        ``CHECK_EVERY`` more forwards when every row ends early."""
        rows = len(states)
        limit = sampling.max_new_tokens
        eos = self._to_device(torch.tensor(sorted(self.eos)))
        token_in = torch.zeros(rows, 1, dtype=torch.long, device=self.device)
        position_in = next_pos[:, :, None].clone()
        self.write_at = torch.zeros(1, dtype=torch.long, device=self.device)
        mask = self.live[:, None, None, :]  # a view: updated in place below
        # cache entries the rows attend to now, each row's fed tokens (each decode step reads them, and the new
        # one of every row: ``decode_kv_tokens``, for the memory floor); counted on the CPU, which knows them
        attended = sum(len(state.fed) for state in states)
        forward = None
        if self.graphs and limit >= GRAPH_MIN_TOKENS:
            began = time.perf_counter()
            forward = self._graphed(token_in, position_in, mask)
            self.stats["capture_s"] += time.perf_counter() - began  # the CPU's; the GPU runs the prefill meanwhile
        tokens = torch.zeros(rows, limit, dtype=torch.long, device=self.device)
        done = torch.zeros(rows, dtype=torch.bool, device=self.device)  # ended before the current token
        chosen_steps = fed_steps = 0
        check = None  # on a GPU: whether every row has ended, as of the previous check (``_later``)
        for step in range(limit):
            if step < self.min_new_tokens:  # as generate's min_new_tokens: no end of answer before that
                logits = logits.index_fill(-1, eos, float("-inf"))
            token = _choose(logits, sampling)
            tokens[:, step] = token
            chosen_steps = step + 1
            ended = done | torch.isin(token, eos)
            if step == limit - 1:
                break
            if step % CHECK_EVERY == CHECK_EVERY - 1:
                if not self.on_gpu:
                    if _read_back(ended.all().item):
                        break
                elif check is not None and _read_back(check):  # every row had ended CHECK_EVERY steps ago
                    break
                else:
                    check = self._later(ended.all())
            token_in.copy_(token[:, None])
            self.write_at.fill_(self.end)
            self.live[:, self.end] = ~done  # a row that had ended: its slot is masked
            logits = forward() if forward else self._step_logits(token_in, position_in, mask)
            self.end += 1
            position_in.add_(1)
            done = ended
            fed_steps = step + 1
            self.stats["decode_steps"] += 1
            self.stats["decode_kv_tokens"] += attended + rows * (step + 1)
            self.stats["forwards"] += 1
        generated = []
        for state, row in zip(states, _read_back(tokens[:, :chosen_steps].tolist), strict=True):
            stop = next((i for i, t in enumerate(row) if t in self.eos), None)
            answer = row if stop is None else row[:stop + 1]
            state.fed.extend(answer[:fed_steps])  # the tokens fed back (in the cache), the end token included
            generated.append(answer)
        self.stats["generated_tokens"] += sum(len(g) for g in generated)
        return generated


# Lanes (``loop._in_lanes``) take turns on the GPU: one lane's compaction, prefill and decode at a time, while the
# others prepare their next step on the CPU. With two lanes' GPU work at once, a decode graph's capture failed
# while the other lane's kernels were launched (that lane then decoded eagerly, 103 ms/sample) and the two
# prefills' activations together ran out of memory (measured on an H200, docs/LOG.md).
_GPU_TURN = threading.Lock()


@dataclass(frozen=True)
class _Compaction:
    """``CachedEngine._plan_compaction``: the new rows' history width and capacity, each row's kept length
    [rows], its live slots [rows, capacity] and its old row [rows]."""

    width: int
    capacity: int
    kept: torch.Tensor
    live: torch.Tensor
    src_rows: torch.Tensor


@dataclass(frozen=True)
class _Staged:
    """A step's inputs made on the CPU before its GPU turn (``CachedEngine._step``): the compaction's plan, the
    block of new tokens [rows, width], its mask, rotary positions [3, rows, width] and each row's last index,
    and the positions of the first answer token [3, rows]."""

    compaction: _Compaction
    block: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    last: torch.Tensor
    next_positions: torch.Tensor


def prefill_chunks(lengths: list[int], tokens: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) row ranges of equal row counts (the last one smaller), each about ``tokens`` new
    tokens of the padded block (rows x the longest row): the prefill encodes one range per forward, so the next
    range's pixels are read on the CPU while the GPU encodes this one. The row count is a power of two, so steps
    whose blocks differ by a few tokens still cut their rows alike: equal ranges give the forwards equal shapes,
    and cuDNN's attention builds an execution plan on the CPU for every new shape, while the GPU waits (measured,
    docs/LOG.md)."""
    if not lengths:
        return []
    fit = max(1, tokens // max(1, max(lengths)))
    per = min(len(lengths), 1 << (fit.bit_length() - 1))
    return [(start, min(start + per, len(lengths))) for start in range(0, len(lengths), per)]


def _read_back(read):
    """``read()``: one of the step's waits for the GPU (whether every row has ended, the answers' tokens, the end of
    the step's timing). A step has no others (GPU test under CUDA's sync debug mode)."""
    return read()


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _choose(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """The next token of each row: the argmax, or a draw from softmax(logits / temperature) within the top-p
    nucleus. A draw is the argmax of p / E with E ~ Exp(1) independent per token (the exponential race: the same
    distribution as ``torch.multinomial``, whose CPU cost per call was ~0.3 ms, a third of a toy decode step)."""
    if not sampling.do_sample:
        return logits.argmax(dim=-1)
    scores = logits.float() / max(sampling.temperature, 1e-5)
    if sampling.top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_scores.softmax(dim=-1) > sampling.top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
    probabilities = scores.softmax(dim=-1)
    return (probabilities / torch.empty_like(probabilities).exponential_(1.0)).argmax(dim=-1)


def _template_view(conversation: list[dict]) -> list[dict]:
    """The conversation as the chat template reads it: roles and content only. A kept conversation's answers
    carry their sampled and prompt token ids (hundreds of ints each, GRPO's), which transformers' template
    preparation walks item by item: 0.15 s of a toy GRPO step on the H200 machine."""
    return [{"role": message["role"], "content": message["content"]} for message in conversation]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _inner_model(model):
    """The Qwen3-VL base model (which has ``get_rope_index``) under any peft wrapper."""
    for candidate in (model, getattr(model, "base_model", None), getattr(getattr(model, "base_model", None),
                                                                          "model", None)):
        inner = getattr(candidate, "model", None)
        if inner is not None and hasattr(inner, "get_rope_index"):
            return inner
    raise AttributeError("no get_rope_index on this model")
