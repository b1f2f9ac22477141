"""Model families: everything the code knows about a kind of model, in one place.

A family is declared by a grounder (detected from the checkpoint's ``model_type``, or given by the user for
other models). The coordinate convention says how to read a box out of the family's answers (see ``boxes``); the
prompts are in ``prompts`` (keyed by ``prompt_family``). Adding a family is a ``Family`` here, its prompts there,
and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ivt_core.boxes import check_convention
from ivt_core.errors import InvalidInputError


@dataclass(frozen=True)
class Family:
    """A model family: its name, the ``model_type`` values that belong to it, its box convention and prompts,
    and what the engine needs to know of it.

    ``processor``: the image-only processor class in ``grounders.processing`` ("" for none: other VLMs load
    their own); ``cached_engine``: the cached loop engine runs it (``grounders.engine``); ``rope_index``: training
    precomputes its 3-D rope positions on the CPU (``supervision.cpu_rope_index``); ``patch``: the vision patch
    size, whose double is the resize factor (server-side resizing, the tiny-model kit).
    """

    name: str
    model_types: tuple[str, ...]
    convention: str
    prompt_family: str
    processor: str = ""
    cached_engine: bool = False
    rope_index: bool = False
    patch: int = 14

    def resize_factor(self) -> int:
        """Image sides are resized to multiples of this (patch x the 2x2 spatial merge)."""
        return 2 * self.patch


FAMILIES: dict[str, Family] = {
    "qwen3_vl": Family("qwen3_vl", ("qwen3_vl", "qwen3_vl_moe"), "norm1000", "qwen3_vl",
                       processor="Qwen3VLImageOnlyProcessor", cached_engine=True, rope_index=True, patch=16),
    "qwen2_5_vl": Family("qwen2_5_vl", ("qwen2_5_vl",), "abs_resized", "qwen2_5_vl",
                         processor="Qwen2_5_VLImageOnlyProcessor"),
    "qwen2_vl": Family("qwen2_vl", ("qwen2_vl",), "norm1000", "qwen2_vl", processor="Qwen2VLImageOnlyProcessor"),
}


def get_family(name: str) -> Family:
    """The family called ``name``. Raises InvalidInputError naming the known families."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise InvalidInputError(f"unknown model family {name!r}; use one of {', '.join(FAMILIES)}") from None


def family_for_model_type(model_type: str, convention: str | None = None) -> Family:
    """The family of a checkpoint's ``model_type``; other VLMs get a generic family with ``convention``.

    Raises InvalidInputError if the model type is unknown and no convention was given.
    """
    for family in FAMILIES.values():
        if model_type in family.model_types:
            if convention is not None:
                return replace(family, convention=check_convention(convention))
            return family
    if convention is None:
        raise InvalidInputError(
            f"model type {model_type!r} has no known box convention; pass --coords "
            "(norm1000, abs_resized, norm1 or abs) to say how its answers give boxes"
        )
    return Family(model_type, (model_type,), check_convention(convention), "generic")
