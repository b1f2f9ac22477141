"""The transformers backend: any local ``AutoModelForImageTextToText`` checkpoint with a chat template.

Qwen3-VL, Qwen2.5-VL and Qwen2-VL are tested (each with its box convention, ``families``); other VLMs load
through their stock ``AutoProcessor`` with a convention given by the user. Batches are left-padded so that every
row's answer starts at the same position. Optional: a LoRA adapter (peft) and a 4-bit NF4 base (bitsandbytes).
Never downloads: ``local_files_only`` everywhere.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ivt_core.errors import InvalidInputError, NotFoundError
from ivt_core.families import Family, family_for_model_type
from ivt_core.grounders.base import Generation, Sampling, chat_text, conversation_images
from ivt_core.grounders.decode_attention import enable_decode_attention
from ivt_core.grounders.fast_vision import enable_fast_vision
from ivt_core.grounders.fused_kernels import enable_fused_kernels
from ivt_core.grounders.processing import PROCESSOR_CLASSES, load_processor, resized_size


def _read_model_type(path: Path) -> str:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InvalidInputError(f"{path} has no config.json: it is not a model checkpoint folder")
    try:
        return json.loads(config_file.read_text())["model_type"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{config_file} is not a valid model config ({exc})") from exc


def _check_vlm(model_type: str, path: Path) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise InvalidInputError(
            f"{path} holds a {model_type!r} model, which is not a vision-language (image-text-to-text) model; "
            "give the folder of a VLM checkpoint such as Qwen3-VL"
        )


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} asked for but no CUDA GPU is available; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise InvalidInputError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    return device


def describe_model(path: str | Path, adapter: str | Path | None = None,
                   coords: str | None = None) -> tuple[str, Family]:
    """A checkpoint's display name (with its adapters) and family, read from its config without loading weights.
    Raises NotFoundError / InvalidInputError saying what to fix."""
    path = Path(path)
    if not path.is_dir():
        raise NotFoundError(f"model folder not found: {path} (give the local folder of a checkpoint)")
    model_type = _read_model_type(path)
    _check_vlm(model_type, path)
    adapters = [Path(a) for a in str(adapter or "").split(",") if a]
    name = path.name + "".join(f"+{a.parent.name if a.name == 'adapter' else a.name}" for a in adapters)
    return name, family_for_model_type(model_type, coords)


class TransformersGrounder:
    """A local checkpoint (plus optional adapter) that answers conversations."""

    forced_starts = True  # answers a conversation that ends with the start of its answer (``chat_text``)

    def __init__(self, model, processor, family: Family, name: str, device: str):
        self.model = model
        self.processor = processor
        self.family = family
        self.name = name
        self.device = device

    @classmethod
    def load(
        cls,
        path: str | Path,
        adapter: str | Path | None = None,
        load_in_4bit: bool = False,
        device: str = "auto",
        coords: str | None = None,
    ) -> TransformersGrounder:
        """Load a checkpoint folder. Raises NotFoundError / InvalidInputError with what to fix."""
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(path)
        name, family = describe_model(path, adapter, coords)
        device = resolve_device(device)
        if family.name in PROCESSOR_CLASSES:
            processor = load_processor(path, family.name)
        else:
            processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
            processor.tokenizer.padding_side = "left"
        kwargs: dict = {"local_files_only": True}
        kwargs["dtype"] = torch.bfloat16 if device.startswith("cuda") else torch.float32
        if load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=kwargs["dtype"]
            )
            kwargs["device_map"] = device if device != "cuda" else "cuda:0"
        try:
            model = AutoModelForImageTextToText.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot load the model in {path}: {exc}") from exc
        if not load_in_4bit:
            model.to(device)
        if adapter:
            model = _attach_adapter(model, Path(adapter))
        model.eval()
        enable_fast_vision(model)
        enable_fused_kernels(model)  # on a GPU where liger-kernel is installed
        enable_decode_attention(model)  # on a GPU (Triton)
        return cls(model, processor, family, name, device)

    def resized_size(self, width: int, height: int) -> tuple[int, int] | None:
        try:
            return resized_size(self.processor, width, height)
        except AttributeError:
            return None

    def predict(self, conversations: list[list[dict]], sampling: Sampling | None = None) -> list[Generation]:
        """Answer each conversation (greedy unless ``sampling`` says otherwise)."""
        import torch

        sampling = sampling or Sampling()
        texts = [chat_text(self.processor, conv) for conv in conversations]
        images = [image for conv in conversations for image in conversation_images(conv)]
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        gen_kwargs = {"max_new_tokens": sampling.max_new_tokens, "do_sample": sampling.do_sample}
        if sampling.do_sample:  # top_k 0: no top-k cut (transformers' default is 50; the engine has none)
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        start = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(**inputs, **gen_kwargs)
        elapsed_ms = (time.perf_counter() - start) * 1000 / max(1, len(conversations))
        prompt_len = inputs["input_ids"].shape[1]
        new_tokens = output[:, prompt_len:]
        answers = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        ends = _end_tokens(self.model, self.processor.tokenizer)
        results = []
        for row, answer in enumerate(answers):
            ids = new_tokens[row].tolist()
            end = next((i + 1 for i, t in enumerate(ids) if t in ends), None)
            sampled = ids[:end] if end else ids[:sampling.max_new_tokens]
            results.append(Generation(
                text=answer.strip(),
                tokens_in=int(inputs["attention_mask"][row].sum()),
                tokens_out=len(sampled),
                latency_ms=elapsed_ms,
                token_ids=tuple(sampled),
                truncated=end is None,
            ))
        return results


def _end_tokens(model, tokenizer) -> set[int]:
    """The tokens that end an answer: the generation config's (one or several), else the tokenizer's."""
    ends = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ends = ends if ends is not None else tokenizer.eos_token_id
    return set(ends if isinstance(ends, list) else [ends])


def _attach_adapter(model, adapter: Path):
    """Put a LoRA adapter on the model. ``a,b``: merge ``a`` into the weights first, then put ``b`` on top
    (a GRPO adapter trained over a merged SFT adapter)."""
    parts = [Path(p) for p in str(adapter).split(",") if p]
    for part in parts:
        if not (part / "adapter_config.json").is_file():
            raise InvalidInputError(f"{part} is not a LoRA adapter folder (no adapter_config.json)")
    from peft import PeftModel

    try:
        for index, part in enumerate(parts):
            model = PeftModel.from_pretrained(model, str(part), local_files_only=True)
            if index < len(parts) - 1:
                model = model.merge_and_unload()
        return model
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InvalidInputError(f"cannot attach adapter {adapter} to this model: {exc}") from exc
