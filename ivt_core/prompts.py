"""Versioned prompt templates per model family.

A run records the prompt family and version it used, so a change of wording is a new version, never an edit
of an old one. Step 0 gets ``ground``; every refinement step gets ``refine`` together with the image showing the
previous box. The refine prompts ask for the phrase "The box is correct." when the model keeps its box, which
``parse`` reads for the ``self`` stopping policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivt_core.errors import InvalidInputError


@dataclass(frozen=True)
class PromptSet:
    family: str
    version: str
    ground: str
    refine: str

    def ground_text(self, expression: str) -> str:
        return self.ground.format(expression=expression)

    def refine_text(self, expression: str) -> str:
        return self.refine.format(expression=expression)


_REFINE_V1 = (
    'The red box drawn on this image is your previous answer for "{expression}". Check it: say what the box '
    "covers and how it should move or change size, then give the corrected box as JSON "
    '{{"bbox_2d": [x1, y1, x2, y2]}}{units}. If the box is already correct, say "The box is correct." and give '
    "the same box."
)

PROMPTS: dict[tuple[str, str], PromptSet] = {}


def _register(family: str, version: str, ground: str, units: str) -> None:
    PROMPTS[(family, version)] = PromptSet(family, version, ground, _REFINE_V1.replace("{units}", units))


_register(
    "qwen3_vl",
    "v1",
    'Locate "{expression}" in the image and output its bounding box as JSON {{"bbox_2d": [x1, y1, x2, y2]}} '
    "with coordinates from 0 to 1000.",
    " with coordinates from 0 to 1000",
)
_register(
    "qwen2_5_vl",
    "v1",
    'Locate "{expression}" in the image and output its bounding box as JSON {{"bbox_2d": [x1, y1, x2, y2]}} '
    "in pixel coordinates.",
    " in pixel coordinates",
)
_register(
    "qwen2_vl",
    "v1",
    'Locate "{expression}" in the image and output its bounding box as JSON {{"bbox_2d": [x1, y1, x2, y2]}} '
    "with coordinates from 0 to 1000.",
    " with coordinates from 0 to 1000",
)
_register(
    "generic",
    "v1",
    'Locate "{expression}" in the image and output its bounding box as JSON {{"bbox_2d": [x1, y1, x2, y2]}}.',
    "",
)

LATEST = "v1"


def get_prompts(family: str, version: str = LATEST) -> PromptSet:
    """The prompt set for ``family`` at ``version``; unknown families fall back to the generic set.

    Raises InvalidInputError for an unknown version.
    """
    key = (family if (family, version) in PROMPTS else "generic", version)
    if key not in PROMPTS:
        versions = sorted({v for _, v in PROMPTS})
        raise InvalidInputError(f"unknown prompt version {version!r}; use one of {', '.join(versions)}")
    return PROMPTS[key]
