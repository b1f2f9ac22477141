"""The ``ivt`` command line, a front door above the engine: nothing in ``ivt_core`` outside this package
imports it (a test checks). ``python -m ivt_core.cli`` is the same as ``ivt``."""

from ivt_core.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
