"""Browser form fields generated from the config dataclasses (``ivt_core.config``): a field marked ``form=True``
becomes a component whose label, default, limits and choices are the field's, so the browser and the CLI cannot
disagree. ``config_from_form`` turns the submitted values back into the same config the CLI builds.

Each component's ``elem_id`` is ``cfg-<job kind>-<field>`` (a test compares every one with its dataclass default).
"""

from __future__ import annotations

from dataclasses import fields

import gradio as gr

from ivt_core.config.settings import default_of, field_of, optional, replace, type_name
from ivt_core.errors import InvalidInputError

SLIDER_SPAN = 20  # whole-number settings with at most this many values are a slider, others a number box


def form_names(cls) -> list[str]:
    """The settings the browser form shows, in the dataclass's order."""
    return [spec.name for spec in fields(cls) if spec.metadata.get("form")]


def config_field(cls, name: str) -> gr.components.Component:
    """The component for setting ``name`` of ``cls``, showing its default."""
    spec = field_of(cls, name)
    meta = spec.metadata
    kind = type_name(spec)
    common = {"label": meta.get("label") or name, "info": meta.get("help") or None,
              "elem_id": f"cfg-{cls.job_kind}-{name}"}
    value = default_of(cls, name)
    low, high = meta.get("min"), meta.get("max")
    if kind == "bool":
        common.pop("info")
        return gr.Checkbox(value=value, **common)
    if meta.get("choices") is not None:
        return gr.Dropdown(list(meta["choices"]), value=value, **common)
    if kind == "int" and low is not None and high is not None and high - low <= SLIDER_SPAN:
        return gr.Slider(low, high, value=value, step=1, **common)
    if kind in ("int", "float"):
        # the limits are checked by the config (a message naming the setting and its range, in the form's note)
        # rather than by gradio's own minimum/maximum, whose refusal is a bare "Error"
        common["info"] = " ".join(filter(None, [common["info"], limits_text(low, high)]))
        return gr.Number(value=value, precision=0 if kind == "int" else None, **common)
    return gr.Textbox(value=value, **common)


def limits_text(low, high) -> str:
    """The range of a number setting as its form field shows it: "(1e-08 to 0.1)", "(at least 1)"."""
    if low is not None and high is not None:
        return f"({low:g} to {high:g})"
    if low is not None:
        return f"(at least {low:g})"
    return f"(at most {high:g})" if high is not None else ""


def config_fields(cls, per_row: int = 3) -> dict[str, gr.components.Component]:
    """A component per form setting of ``cls``, ``per_row`` to a row."""
    names, made = form_names(cls), {}
    for start in range(0, len(names), per_row):
        with gr.Row():
            for name in names[start:start + per_row]:
                made[name] = config_field(cls, name)
    return made


def config_from_form(cls, values: dict, **fixed):
    """The config the form's ``values`` (by field name) and the ``fixed`` settings describe, not yet checked.
    Raises InvalidInputError for an emptied field that has no meaning when empty."""
    for name, value in values.items():
        spec = field_of(cls, name)
        if value == 0 and optional(spec) and (spec.metadata.get("min") or 0) > 0 and type_name(spec) == "int":
            # an optional number left empty ("At most N samples (0: all)") is shown as 0 by gradio's page and
            # reaches the server as 0, which no such setting takes: it means empty
            values[name] = value = None
        if value is None and not optional(spec):
            label = spec.metadata.get("label") or name
            raise InvalidInputError(f"{label} is empty; its default is {default_of(cls, name)}")
        kind = type_name(spec)
        if kind == "int" and value is not None:
            if float(value) != int(value):
                raise InvalidInputError(f"{name} must be a whole number, got {value}")
            values[name] = int(value)
        elif kind == "float" and value is not None:
            values[name] = float(value)
    return replace(cls(), **{**values, **fixed})
