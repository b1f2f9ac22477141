"""A setting is a dataclass field with its documentation and limits in the field's metadata (as TRL's configs
do): ``setting(default, help, min=..., max=..., choices=...)``. From that one definition come the ``--flags`` and
their ``--help`` (``flags.py``), the generic range and choice checks (``check_settings``), the browser's form
fields (``ui/config_form.py``: fields marked ``form=True``) and the job record (the dataclass as JSON).

Adding a knob is adding one field; cross-field rules go in the config's ``check`` method.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import MISSING, Field, field, fields
from typing import Any

from ivt_core.errors import InvalidInputError

MAX_STEPS = 10  # T, the refinement steps after step 0, is 0..MAX_STEPS at every door (CLI, browser, trainers)


def setting(default: Any = MISSING, help: str = "", *, min: float | None = None, max: float | None = None,
            choices: tuple | None = None, form: bool = False, label: str | None = None,
            flags: tuple[str, ...] | None = None, hidden: bool = False, secret: bool = False, path: bool = False,
            default_factory: Any = MISSING) -> Any:
    """A documented config field.

    ``min``/``max``: inclusive limits (checked by ``check_settings``, and the browser field's limits);
    ``choices``: the allowed values; ``form``: the browser form shows it; ``label``: its label there;
    ``flags``: command-line spellings (default ``--field-name``); ``hidden``: not in ``--help`` (set by the job
    runner); ``secret``: never stored in a job record nor shown in a command; ``path``: a local path (several
    comma-separated), made absolute before a job stores it (the job runs in another working directory).
    """
    metadata = {"help": help, "min": min, "max": max, "choices": choices, "form": form, "label": label,
                "flags": flags, "hidden": hidden, "secret": secret, "path": path}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def steps_setting(default: int = 2, help: str = "refinement steps T after step 0 (0: single shot)",
                  minimum: int = 0, **kwargs) -> Any:
    """T, with the one range every door uses."""
    return setting(default, help, min=minimum, max=MAX_STEPS, **kwargs)


def default_of(cls, name: str) -> Any:
    """The default value of field ``name`` of config class ``cls``."""
    spec = field_of(cls, name)
    return spec.default_factory() if spec.default_factory is not MISSING else spec.default


def field_of(cls, name: str) -> Field:
    """The dataclass field ``name`` of ``cls``. Raises KeyError naming the fields there are."""
    for spec in fields(cls):
        if spec.name == name:
            return spec
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def type_name(spec: Field) -> str:
    """The field's type without ``| None``: "int", "float", "str", "bool", "dict"... (annotations may be strings,
    under ``from __future__ import annotations``, or types)."""
    kind = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", str(spec.type))
    return kind.replace(" | None", "").replace("None | ", "").replace("Optional[", "").rstrip("]").strip()


def optional(spec: Field) -> bool:
    """Whether None is a value of the field (it means "not set": all samples, no run...)."""
    return "None" in str(spec.type)


def flag_of(spec: Field) -> str:
    """How a user spells the field on the command line (the first of its flags)."""
    return (spec.metadata.get("flags") or (f"--{spec.name.replace('_', '-')}",))[0]


def check_settings(config) -> None:
    """Check every field against its limits and choices. Raises InvalidInputError naming the setting and what
    values it takes."""
    for spec in fields(config):
        value = getattr(config, spec.name)
        meta = spec.metadata
        name, flag = spec.name, f" ({flag_of(spec)})"
        if value is None or isinstance(value, (dict, list)):
            continue
        if meta.get("choices") is not None and value not in meta["choices"]:
            shown = ", ".join(repr(c) if c == "" else str(c) for c in meta["choices"])
            raise InvalidInputError(f"{name} must be one of {shown}; got {value!r}{flag}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(f"{name} must be a finite number, got {value}{flag}")
        low, high = meta.get("min"), meta.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                raise InvalidInputError(f"{name} must be between {_number(low)} and {_number(high)}, got "
                                        f"{_number(value)}{flag}")
            bound = f"at least {_number(low)}" if low is not None else f"at most {_number(high)}"
            raise InvalidInputError(f"{name} must be {bound}, got {_number(value)}{flag}")


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def stored(config) -> dict:
    """The config as a JSON-ready dict for a job record or a checkpoint (secrets left out)."""
    return {spec.name: getattr(config, spec.name) for spec in fields(config) if not spec.metadata.get("secret")}


def from_stored(cls, values: dict):
    """A config from a stored dict; unknown keys (a field removed since) are refused with their names."""
    names = {spec.name for spec in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise InvalidInputError(f"unknown {cls.__name__} settings: {', '.join(sorted(unknown))} "
                                f"(known: {', '.join(sorted(names))})")
    return cls(**values)


def absolute_paths(config):
    """A copy of ``config`` whose path settings are absolute, resolved from the current working directory."""
    from pathlib import Path

    values = {}
    for spec in fields(config):
        value = getattr(config, spec.name)
        if spec.metadata.get("path") and isinstance(value, str) and value:
            values[spec.name] = ",".join(str(Path(part).expanduser().resolve()) for part in value.split(",") if part)
    return dataclasses.replace(config, **values)


def replace(config, **values):
    """``dataclasses.replace`` that names an unknown setting instead of a TypeError."""
    names = {spec.name for spec in fields(config)}
    unknown = set(values) - names
    if unknown:
        raise InvalidInputError(f"unknown {type(config).__name__} settings: {', '.join(sorted(unknown))}")
    return dataclasses.replace(config, **values)
