"""Turning conversations with known answers into training tensors: loss only on the assistant's answer tokens.

Used by the toy pretraining (one grounding turn) and, later, SFT on corrective traces (several turns, the first
answer being context only). Why not TRL's collator: we need exact control over which assistant turns carry the
loss and over the Qwen-VL multimodal fields (``pixel_values``, ``image_grid_thw``, ``mm_token_type_ids``), and the
precomputed 3-D rope positions that keep the GPU from waiting on a per-sample Python loop.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import torch

from ivt_core.grounders.base import conversation_images

IGNORE = -100


def build_example(processor, conversation: list[dict], train_turns: set[int] | None = None) -> dict:
    """Tokenize ``conversation`` (which ends with an assistant turn) and label the trained assistant turns.

    ``train_turns`` holds indices into ``conversation`` of assistant messages whose tokens (and their end-of-turn
    token) carry the loss; default: the last message only. Returns 1-D tensors plus the image fields.
    """
    train_turns = {len(conversation) - 1} if train_turns is None else train_turns
    images = conversation_images(conversation)
    full_text = processor.apply_chat_template(conversation, tokenize=False)
    inputs = processor(text=[full_text], images=images or None, return_tensors="pt")
    input_ids = inputs["input_ids"][0]
    labels = torch.full_like(input_ids, IGNORE)
    counts = _image_token_counts(processor, inputs)
    turns = sorted(train_turns)
    for start, end in _turn_bounds(processor, conversation, turns, counts) if turns else []:
        labels[start:end] = input_ids[start:end]
    example = {"input_ids": input_ids, "labels": labels}
    for key in ("pixel_values", "image_grid_thw", "mm_token_type_ids"):
        if key in inputs:
            example[key] = inputs[key] if key != "mm_token_type_ids" else inputs[key][0]
    return example


def build_rollout_example(processor, conversation: list[dict], train_turns: set[int],
                          drop_truncated: bool = False) -> dict:
    """Like ``build_example``, for a sampled rollout: every assistant turn that carries ``token_ids`` (the loop
    keeps them, ``keep_conversations``) holds exactly the sampled tokens, and those are what ``train_turns``
    label; the text tokenized again could differ. A turn cut at the token limit (``truncated``) is followed by
    the template's end of turn as context, never labelled: no end token the model did not sample is trained.
    ``drop_truncated``: a truncated turn is not labelled at all (TRL's ``mask_truncated_completions``).
    A rollout that sampled the image token (an untrained model may) cannot be fed back as it was (that token
    stands for image features): it is replaced by padding and the rollout carries no loss.
    """
    example = build_example(processor, conversation, set())
    ids, types = example["input_ids"].tolist(), example.get("mm_token_type_ids")
    types = types.tolist() if types is not None else None
    labels = [IGNORE] * len(ids)
    counts = _image_token_counts(processor, {"image_grid_thw": example.get("image_grid_thw")})
    end_id = processor.tokenizer.eos_token_id
    image_token, pad = getattr(processor, "image_token_id", None), processor.tokenizer.pad_token_id
    poisoned = False
    turns = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
    bounds = _turn_bounds(processor, conversation, turns, counts)
    for turn, (start, end) in reversed(list(zip(turns, bounds, strict=True))):  # from the end: earlier
        message = conversation[turn]                                             # positions stay put
        if "token_ids" not in message:
            span, trained = ids[start:end], [turn in train_turns] * (end - start)
        else:
            rendered = ids[start:end]
            stop = max((i for i, t in enumerate(rendered) if t == end_id), default=None)
            tail = rendered[stop:] if stop is not None else []  # the end token and what follows it
            sampled = list(message["token_ids"])
            if image_token is not None and image_token in sampled:
                sampled, poisoned = [pad if t == image_token else t for t in sampled], True
            truncated = bool(message.get("truncated"))
            if not truncated and sampled and sampled[-1] == end_id:
                tail = tail[1:]  # the sampled end token is already there
            label = turn in train_turns and not (truncated and drop_truncated)
            span, trained = sampled + tail, [label] * len(sampled) + [False] * len(tail)
        ids[start:end] = span
        labels[start:end] = [t if keep else IGNORE for t, keep in zip(span, trained, strict=True)]
        if types is not None:
            types[start:end] = [0] * len(span)  # text
    if poisoned:
        labels = [IGNORE] * len(ids)
    out = dict(example, input_ids=torch.tensor(ids), labels=torch.tensor(labels))
    if types is not None:
        out["mm_token_type_ids"] = torch.tensor(types, dtype=example["mm_token_type_ids"].dtype)
    return out


def rollout_example_from_ids(conversation: list[dict], train_turns: set[int], image_token_id: int, end_id: int,
                             drop_truncated: bool = False) -> dict | None:
    """``build_rollout_example``'s row, read from what the cached engine fed the model (each assistant message's
    ``prompt_ids``) instead of templating and tokenizing the conversation again (most of a GRPO step's CPU time).
    The last turn's prompt ids hold every earlier answer right after that answer's own prompt, as its text
    tokenized again, up to the template's end token; each is replaced by the tokens sampled (as
    ``build_rollout_example`` does: a sampled end token stands for the template's, a truncated answer keeps the
    template's as unlabelled context), and the last answer's sampled tokens follow. None where the ids do not
    line up that way, or a sampled image token voids the rollout: the caller falls back to
    ``build_rollout_example``. No image fields: the caller adds the pixels (``image_inputs``)."""
    turns = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
    if not turns or any("prompt_ids" not in conversation[i] or "token_ids" not in conversation[i] for i in turns):
        return None
    last = list(conversation[turns[-1]]["prompt_ids"])
    ids: list[int] = []
    labels: list[int] = []
    cursor = 0
    for turn in turns:
        message = conversation[turn]
        prompt, sampled = message["prompt_ids"], list(message["token_ids"])
        start = len(prompt)
        if image_token_id in sampled or start < cursor or last[:start] != list(prompt):
            return None
        ids += last[cursor:start]
        labels += [IGNORE] * (start - cursor)
        trained = turn in train_turns and not (message.get("truncated") and drop_truncated)
        ids += sampled
        labels += sampled if trained else [IGNORE] * len(sampled)
        if turn == turns[-1]:
            break
        try:  # where the template's end of this answer is in the last prompt
            end = last.index(end_id, start)
        except ValueError:
            return None
        ended = bool(sampled) and sampled[-1] == end_id and not message.get("truncated")
        cursor = end + 1 if ended else end  # a sampled end token replaces the template's
    input_ids = torch.tensor(ids)
    return {"input_ids": input_ids, "labels": torch.tensor(labels),
            "mm_token_type_ids": (input_ids == image_token_id).to(torch.int32)}


def image_inputs(processor, images: list, device=None, cache: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``pixel_values`` and ``image_grid_thw`` of ``images`` in order, as the processor gives them. Each distinct
    image object is processed once (GRPO's G rollouts of a prompt share its scene). With a ``device`` (callers
    give their GPU), images already at the size the processor would resize them to are patchified there in one
    call per size (``patchify_on_device``, tested equal to the processor): the processor's CPU work (~10 ms per
    640x480 image, serial with the GPU) was a third of the engine's time. Others, and all images without a
    ``device`` (on a CPU torch's patchify is slower), go through the processor itself. ``cache``: a dict kept by
    the caller (id of an image -> the image, its pixel rows, its grid): images found there are not processed
    again (GRPO's update reads the pixels its rollouts computed)."""
    known = cache if cache is not None else {}
    distinct = list({id(image): image for image in images}.values())
    todo = [image for image in distinct if id(image) not in known]
    if todo:
        for image, part, grid in zip(todo, *_process_images(processor, todo, device), strict=True):
            known[id(image)] = (image, part, grid)
    entries = [known[id(image)] for image in images]
    return torch.cat([part for _, part, _ in entries]), torch.stack([grid for _, _, grid in entries])


def _process_images(processor, images: list, device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The pixel rows and the grid of each of ``images`` (see ``image_inputs``)."""
    import numpy as np

    from ivt_core.grounders.processing import resized_size

    ip = processor.image_processor
    standard = all(getattr(ip, flag, True) for flag in ("do_rescale", "do_normalize", "do_convert_rgb"))
    if device is None or not standard or any(resized_size(processor, *image.size) != image.size for image in images):
        processed = ip(images=images, return_tensors="pt")
        grids = processed["image_grid_thw"]
        return list(processed["pixel_values"].split([int(g.prod()) for g in grids])), list(grids)
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        by_size.setdefault(image.size, []).append(index)
    parts: list[torch.Tensor | None] = [None] * len(images)
    pinned = torch.device(device).type == "cuda"
    for members in by_size.values():
        width, height = images[members[0]].size
        # in page-locked memory on a GPU, so the copy does not wait for the kernels queued before it (the engine
        # reads a prefill chunk's images while the previous chunk runs)
        stacked = torch.empty((len(members), height, width, 3), dtype=torch.uint8, pin_memory=pinned)
        for slot, index in enumerate(members):
            np.copyto(stacked[slot].numpy(), np.asarray(_rgb(images[index])))
        rows = patchify_on_device(stacked.to(device, non_blocking=pinned), ip).view(len(members), -1, _patch_width(ip))
        for slot, index in enumerate(members):
            parts[index] = rows[slot]
    grids = [torch.tensor([1, image.height // ip.patch_size, image.width // ip.patch_size]) for image in images]
    return parts, grids


def _rgb(image):
    return image if image.mode == "RGB" else image.convert("RGB")  # an RGB image as it is (copied into the batch)


def _patch_width(ip) -> int:
    return 3 * ip.temporal_patch_size * ip.patch_size ** 2


def _image_token_counts(processor, inputs) -> list[int]:
    grids = inputs.get("image_grid_thw")
    if grids is None:
        return []
    merge = processor.image_processor.merge_size ** 2
    return [int(g.prod()) // merge for g in grids]


def _turn_bounds(processor, conversation: list[dict], turns: list[int], counts: list[int]) -> list[tuple[int, int]]:
    """(start, end) token positions of each assistant turn in ``turns``, with one batched tokenizer call (the
    tokenizer encodes a batch in parallel outside the GIL) instead of two calls per turn."""
    texts = []
    for turn in turns:
        texts.append(_expanded(processor, conversation[:turn], counts, True))
        texts.append(_expanded(processor, conversation[: turn + 1], counts, False))
    lengths = [len(ids) for ids in processor.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return list(zip(lengths[::2], lengths[1::2], strict=True))


def _expanded(processor, messages: list[dict], counts: list[int], generation_prompt: bool) -> str:
    """``messages`` rendered by the chat template with each image's token repeated to its count. Only text is
    tokenized afterwards (the image tokens of a prefix are the first images of the conversation), so the image
    processor runs once per example, not once per prefix."""
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    token = processor.image_token
    pieces = text.split(token)
    return pieces[0] + "".join(token * counts[i] + piece for i, piece in enumerate(pieces[1:]))


def collate(examples: list[dict], pad_id: int, rope_index=None) -> dict:
    """Right-pad a list of ``build_example`` outputs into a batch; add 3-D rope positions if ``rope_index``."""
    length = max(int(e["input_ids"].shape[0]) for e in examples)
    batch_size = len(examples)
    input_ids = torch.full((batch_size, length), pad_id, dtype=torch.long)
    labels = torch.full((batch_size, length), IGNORE, dtype=torch.long)
    attention = torch.zeros((batch_size, length), dtype=torch.long)
    mm_types = torch.zeros((batch_size, length), dtype=torch.int32)
    for row, e in enumerate(examples):
        n = int(e["input_ids"].shape[0])
        input_ids[row, :n] = e["input_ids"]
        labels[row, :n] = e["labels"]
        attention[row, :n] = 1
        if "mm_token_type_ids" in e:
            mm_types[row, :n] = e["mm_token_type_ids"]
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
    if any("pixel_values" in e for e in examples):
        batch["pixel_values"] = torch.cat([e["pixel_values"] for e in examples if "pixel_values" in e])
    if any("image_grid_thw" in e for e in examples):
        batch["image_grid_thw"] = torch.cat([e["image_grid_thw"] for e in examples if "image_grid_thw" in e])
        batch["mm_token_type_ids"] = mm_types
    if rope_index is not None and "image_grid_thw" in batch:
        position_ids, _ = rope_index(
            input_ids, mm_token_type_ids=mm_types, image_grid_thw=batch["image_grid_thw"], attention_mask=attention)
        batch["position_ids"] = position_ids
    return batch


def cpu_rope_index(model_class, config):
    """The model's own ``get_rope_index`` bound to a stand-in holding only the config, runnable on the CPU.

    Lets data-loader workers compute Qwen3-VL's 3-D positions, which the model would otherwise compute in a
    per-sample Python loop on the GPU at every step. Returns None if the class has no such method.
    """
    inner = getattr(model_class, "get_rope_index", None)
    if inner is None:
        return None
    stub = SimpleNamespace(config=config)
    for name in ("get_vision_position_ids",):
        if hasattr(model_class, name):
            setattr(stub, name, functools.partial(getattr(model_class, name), stub))
    return functools.partial(inner, stub)


def build_text_example(processor, conversation: list[dict], image_sizes: list[tuple[int, int]],
                       train_turns: list[int] | None = None) -> dict:
    """Like ``build_example``, but without running the image processor.

    ``image_sizes`` are the (width, height) of the conversation's images *as the processor would resize them*;
    the caller supplies the pixels separately (``patchify_on_device``). This keeps data-loader workers to
    scene drawing and tokenizing, which is what lets a GPU train the toy model at full speed. ``train_turns``:
    indices of the assistant messages that carry the loss (default: the last message).
    """
    ip = processor.image_processor
    counts = [(w // ip.patch_size) * (h // ip.patch_size) // ip.merge_size ** 2 for w, h in image_sizes]
    turns = [len(conversation) - 1] if train_turns is None else sorted(train_turns)
    expanded = _expanded(processor, conversation, counts, generation_prompt=False)
    input_ids = torch.tensor(processor.tokenizer(expanded, add_special_tokens=False)["input_ids"])
    labels = torch.full_like(input_ids, IGNORE)
    for start, end in _turn_bounds(processor, conversation, turns, counts):
        labels[start:end] = input_ids[start:end]
    grids = torch.tensor([[1, h // ip.patch_size, w // ip.patch_size] for w, h in image_sizes])
    mm_types = (input_ids == processor.image_token_id).to(torch.int32)
    return {"input_ids": input_ids, "labels": labels, "mm_token_type_ids": mm_types, "image_grid_thw": grids}


def patchify_on_device(images: torch.Tensor, image_processor) -> torch.Tensor:
    """``pixel_values`` for a batch of uint8 images (N, H, W, 3) already at the processor's target size.

    Mirrors the Qwen2-VL image processor (rescale, normalize, merge-ordered patches, temporal duplication) in
    torch, so it runs where the images are (e.g. on the GPU). A test checks it equals the processor's output.
    """
    ip = image_processor
    p, m, t = ip.patch_size, ip.merge_size, ip.temporal_patch_size
    # copied without waiting for the GPU's queued work (a plain copy to the GPU waits for it)
    mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1).to(images.device, non_blocking=True)
    std = torch.tensor(ip.image_std).view(1, 3, 1, 1).to(images.device, non_blocking=True)
    x = images.permute(0, 3, 1, 2).float() * ip.rescale_factor
    x = (x - mean) / std
    n, c, h, w = x.shape
    gh, gw = h // p, w // p
    x = x.reshape(n, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
    x = x.unsqueeze(6).expand(*x.shape[:6], t, p, p)
    return x.reshape(n * gh * gw, c * t * p * p)
