"""Limits on what enters a workspace, each with the message that says what to fix. One home, so that the
importers, the trace review, the forms and the CLI refuse the same things the same way."""

from __future__ import annotations

import math
import re

from ivt_core.errors import InvalidInputError

MAX_EXPRESSION_CHARS = 2_000  # referring expressions of the benchmarks are < 300 characters
MAX_REASONING_CHARS = 20_000
MAX_IMAGE_PIXELS = 50_000_000  # larger images are refused at import (decompression bombs among them)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_name(name: object, what: str = "dataset name") -> str:
    """Return ``name`` if it can name a dataset: 1-64 letters, digits, '_', '.', '-', starting with a letter or
    digit (it appears in sample ids, file names and the app's "dataset/split" choices). Raises InvalidInputError."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidInputError(f"{what} {name!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', "
                                "starting with a letter or digit (e.g. refcocog-val)")
    return name


def check_text(text: object, what: str, limit: int) -> str:
    """Return ``text`` if it is a non-empty string of at most ``limit`` characters. Raises InvalidInputError."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(f"the {what} is empty")
    if len(text) > limit:
        raise InvalidInputError(f"the {what} has {len(text):,} characters; at most {limit:,} are accepted")
    return text


def check_box_values(values: object, width: int, height: int, what: str = "box") -> list[float]:
    """Four finite numbers x1 < x2, y1 < y2 inside a ``width`` x ``height`` image (1 px of slack), as floats.
    Raises InvalidInputError naming the problem."""
    try:
        numbers = [float(v) for v in values]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} {values!r} is not four numbers") from None
    if len(numbers) != 4:
        raise InvalidInputError(f"{what} {values!r} is not four numbers")
    if not all(math.isfinite(v) for v in numbers):
        raise InvalidInputError(f"{what} {values!r} has a value that is not a finite number")
    x1, y1, x2, y2 = numbers
    if not (x1 < x2 and y1 < y2):
        raise InvalidInputError(f"{what} {numbers} is empty (needs x1 < x2 and y1 < y2)")
    if x1 < -1 or y1 < -1 or x2 > width + 1 or y2 > height + 1:
        raise InvalidInputError(f"{what} {numbers} lies outside the {width}x{height} image")
    return numbers
