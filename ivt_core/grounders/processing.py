"""Image-only processors for the Qwen-VL families, so that no torchvision is needed.

Why hand-written: transformers 5.x Qwen-VL processors insist on a video processor, and every Qwen video
processor needs torchvision, which has no CPU build for our pinned torch (shared/reference/environment.md,
section 1a). The subclasses below drop the video processor and pair the tokenizer with transformers' own
numpy/PIL image processor (``Qwen2VLImageProcessorPil``); everything else (chat template, image-token expansion,
``mm_token_type_ids`` for Qwen3-VL) is the stock code. ``load_processor`` reads folders saved by these classes
and folders saved by the stock processors (a real checkpoint) alike.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

from ivt_core.errors import InvalidInputError
from ivt_core.families import FAMILIES


class Qwen3VLImageOnlyProcessor(Qwen3VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


# family name -> its image-only processor class (the family names the class: ``Family.processor``)
PROCESSOR_CLASSES = {name: globals()[family.processor] for name, family in FAMILIES.items() if family.processor}


def _read_chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    for name in ("chat_template.json", "processor_config.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            try:
                template = json.loads(path.read_text()).get("chat_template")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(template, str):
                return template
    return None


def _image_processor_config(folder: Path) -> dict:
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path} is not valid JSON ({exc}); restore the checkpoint's file") from exc
            return data.get("image_processor", data)
    raise InvalidInputError(
        f"{folder} has no preprocessor_config.json: it is not a vision-language checkpoint with an image processor"
    )


def load_processor(folder: str | Path, family: str):
    """Build the image-only processor of ``family`` from a checkpoint folder, without network or torchvision.

    Raises InvalidInputError if the folder lacks a tokenizer, an image processor config or a chat template.
    """
    folder = Path(folder)
    cls = PROCESSOR_CLASSES.get(family)
    if cls is None:
        raise InvalidInputError(
            f"no image-only processor for family {family!r}; supported: {', '.join(PROCESSOR_CLASSES)}"
        )
    config = _image_processor_config(folder)
    keys = ("size", "patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std", "min_pixels",
            "max_pixels", "do_resize", "do_rescale", "rescale_factor", "do_normalize", "do_convert_rgb")
    image_processor = Qwen2VLImageProcessorPil(**{k: config[k] for k in keys if config.get(k) is not None})
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot load a tokenizer from {folder}: {exc}") from exc
    template = _read_chat_template(folder)
    if template is None:
        raise InvalidInputError(f"{folder} has no chat template (chat_template.jinja or chat_template.json)")
    tokenizer.padding_side = "left"
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)


def resized_size(processor, width: int, height: int) -> tuple[int, int]:
    """The (width, height) the processor resizes a ``width`` x ``height`` image to (Qwen2.5-VL's box units)."""
    ip = processor.image_processor
    factor = ip.patch_size * ip.merge_size
    size = ip.size
    min_pixels = size.get("shortest_edge") if hasattr(size, "get") else size.shortest_edge
    max_pixels = size.get("longest_edge") if hasattr(size, "get") else size.longest_edge
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return w, h
