"""Diagnostics go to the ``ivt`` logger (``logging.getLogger("ivt.<module>")``); what a command is for (its
results, a one-line error) is printed by the front door itself. ``setup`` is called once by each front door
(``ivt``, ``app.py``, the trainers) with its ``--verbose`` switch: warnings only by default, everything with it.
"""

from __future__ import annotations

import logging
import sys


def setup(verbose: bool = False) -> None:
    """Send the ``ivt`` loggers to stderr: INFO and up with ``verbose``, else WARNING and up."""
    logger = logging.getLogger("ivt")
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.propagate = False


def get(name: str) -> logging.Logger:
    """The logger of module ``name`` (``__name__``) under ``ivt``."""
    return logging.getLogger("ivt." + name.removeprefix("ivt_core.").removeprefix("training."))
