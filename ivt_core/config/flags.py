"""Command-line flags generated from a config dataclass, for every front door (``ivt eval``, ``ivt synth``,
``ivt train sft|grpo``, ``python -m training.*``), plus ``--config FILE`` (JSON or YAML) that flags override.

Why not ``transformers.HfArgumentParser``: it is a parser of its own, while ``ivt`` needs the fields as
arguments of its sub-commands (``add_subparsers`` creates those parsers itself); it spells booleans
``--flag true``, where our users type ``--flag`` / ``--no-flag``; and it ignores the limits and choices kept in
our field metadata. What is needed here is these ~90 lines over plain argparse.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from ivt_core.config.settings import default_of, flag_of, from_stored, type_name
from ivt_core.errors import InvalidInputError

CONFIG_DEST = "config_file"


def _number(kind: type):
    def convert(text: str):
        if kind is int and text == "auto":  # batch sizes: 0 means "as many as fit", spelled auto
            return 0
        try:
            return kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None

    return convert


CONVERTERS = {"int": _number(int), "float": _number(float), "str": str}


def add_config_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """Add ``--config FILE`` and one flag per field of ``cls`` (dict and list fields: file only).

    Every flag defaults to None, so that ``config_from_args`` can tell what the user typed from the defaults.
    """
    parser.add_argument("--config", dest=CONFIG_DEST, default=None, metavar="FILE",
                        help=f"JSON or YAML file of {cls.__name__} settings; flags override it")
    group = parser.add_argument_group(f"settings ({cls.__name__}; also keys of --config)")
    for spec in fields(cls):
        kind = type_name(spec)
        if spec.name in skip or (kind not in CONVERTERS and kind != "bool"):
            continue
        meta = spec.metadata
        names = meta.get("flags") or (flag_of(spec),)
        default = default_of(cls, spec.name)
        shown = "" if default in ("", None) else f" (default: {default})"
        helptext = argparse.SUPPRESS if meta.get("hidden") else (meta.get("help", "") + shown).replace("%", "%%")
        if kind == "bool":
            group.add_argument(*names, dest=spec.name, action=argparse.BooleanOptionalAction, default=None,
                               help=helptext)
            continue
        group.add_argument(*names, dest=spec.name, type=CONVERTERS[kind], default=None, help=helptext,
                           choices=meta.get("choices") if kind == "str" else None)


def read_config_file(path: str | Path) -> dict:
    """The settings in a JSON or YAML file. Raises InvalidInputError for a missing or malformed file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInputError(f"cannot read config file {path}: {exc.strerror}") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"config file {path} is not valid YAML: {exc}") from exc
    else:
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise InvalidInputError(f"config file {path} is not valid {path.suffix[1:] or 'JSON'}: {exc}") from exc
    if not isinstance(values, dict):
        raise InvalidInputError(f"config file {path} must hold one object of settings, not {type(values).__name__}")
    return values


def config_from_args(cls, args: argparse.Namespace, base: dict | None = None):
    """The config a parsed command line asks for: ``base`` (e.g. a stored job's settings), then the
    ``--config`` file, then the flags the user typed. Not checked: call ``.check()``."""
    values: dict[str, Any] = dict(base or {})
    path = getattr(args, CONFIG_DEST, None)
    if path:
        values.update(read_config_file(path))
    values.update({spec.name: getattr(args, spec.name) for spec in fields(cls)
                   if getattr(args, spec.name, None) is not None})
    return from_stored(cls, values)


def config_to_argv(config) -> list[str]:
    """The flags that reproduce ``config`` (only the settings that differ from their defaults; secrets and
    hidden fields left out)."""
    argv: list[str] = []
    for spec in fields(config):
        value = getattr(config, spec.name)
        meta = spec.metadata
        kind = type_name(spec)
        if meta.get("secret") or meta.get("hidden") or value == default_of(type(config), spec.name):
            continue
        if kind == "bool":
            argv.append(flag_of(spec) if value else "--no-" + flag_of(spec)[2:])
        elif kind in CONVERTERS and value is not None:
            argv += [flag_of(spec), f"{value:g}" if isinstance(value, float) else str(value)]
    return argv


class _RaisingParser(argparse.ArgumentParser):
    """A usage error becomes an InvalidInputError (for argument lists stored in the database)."""

    def error(self, message: str):
        raise InvalidInputError(f"{self.prog}: {message}")


def parse_config(cls, argv: list[str], prog: str) -> Any:
    """Parse ``argv`` holding only ``cls``'s flags (and ``--config``) into a config (not checked)."""
    parser = _RaisingParser(prog=prog, add_help=False)
    add_config_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))
