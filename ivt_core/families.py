"""Model families: what each answers in, and which prompts it gets.

A family is declared by a grounder (detected from the checkpoint's ``model_type``, or given by the user for
other models). The coordinate convention says how to read a box out of the family's answers (see ``boxes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ivt_core.boxes import check_convention
from ivt_core.errors import InvalidInputError


@dataclass(frozen=True)
class Family:
    """A model family: its name, the ``model_type`` values that belong to it, and its box convention."""

    name: str
    model_types: tuple[str, ...]
    convention: str
    prompt_family: str


FAMILIES: dict[str, Family] = {
    "qwen3_vl": Family("qwen3_vl", ("qwen3_vl", "qwen3_vl_moe"), "norm1000", "qwen3_vl"),
    "qwen2_5_vl": Family("qwen2_5_vl", ("qwen2_5_vl",), "abs_resized", "qwen2_5_vl"),
    "qwen2_vl": Family("qwen2_vl", ("qwen2_vl",), "norm1000", "qwen2_vl"),
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
                return Family(family.name, family.model_types, check_convention(convention), family.prompt_family)
            return family
    if convention is None:
        raise InvalidInputError(
            f"model type {model_type!r} has no known box convention; pass --coords "
            "(norm1000, abs_resized, norm1 or abs) to say how its answers give boxes"
        )
    return Family(model_type, (model_type,), check_convention(convention), "generic")
