"""The model card (README.md) a trainer writes beside the model it saved: how it was made, as facts and as the
command that makes it again.

peft's ``save_pretrained`` writes a template card ("Model Card for Model ID", every section "[More Information
Needed]"), and the app's Overview shows a model's README.md; so the trainers replace the template with what they
know when they finish. Evaluation numbers are not in it (they come later, from runs): the Overview lists the
model's runs under its card. Written by hand rather than through ``huggingface_hub.ModelCard``: the card is a few
lines of Markdown, and that class's template is the boilerplate being replaced.
"""

from __future__ import annotations

import platform
import shlex
import time
from dataclasses import replace
from pathlib import Path

CARD = "README.md"


def write_model_card(folder: Path, *, title: str, kind: str, config, facts: list[tuple[str, str]],
                     config_file: str) -> Path:
    """Write ``folder``/README.md: ``title``, the trainer and where it ran, a table of ``facts`` (name, value),
    the command that trains the same model again (``kind``'s CLI with ``config``'s flags, or ``python -m
    training.<kind> --config <config_file>``, the configuration saved beside the card), and how to get its
    numbers. Returns the card's path."""
    import torch
    import transformers

    from ivt_core.jobs import COMMANDS, shown_command

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.machine()})"
    rows = [f"| {name} | {_cell(value)} |" for name, value in facts]
    # the workspace given (a job's is left to the app); the output folder left out: this one holds the checkpoints
    # that a run with the same --out would resume from, so "again" means a new folder (the default one)
    words = shown_command(kind, replace(config, out=""))
    command = shlex.join([*words[:len(COMMANDS[kind])], "--workspace", str(Path(config.workspace).resolve()),
                          *words[len(COMMANDS[kind]):]])
    text = "\n".join([
        f"# {title}",
        "",
        f"Trained by IVT Studio's `training.{kind}` on {time.strftime('%Y-%m-%d %H:%M %Z')}, {device}, torch "
        f"{torch.__version__}, transformers {transformers.__version__}.",
        "",
        "| | |",
        "|---|---|",
        *rows,
        "",
        "## Train it again",
        "",
        "```bash",
        command,
        "```",
        "",
        f"or `python -m training.{kind} --config {config_file} --out NEW_FOLDER` with the configuration saved "
        "beside this card (the same settings; the data is what the workspace holds then).",
        "",
        "## Numbers",
        "",
        "Not evaluated when this card was written. Evaluate it from the Train tab (\"Evaluate the trained model\") or "
        f"Explore's evaluation form, where it is registered as `{Path(config.out).name or title}`; the app's Overview "
        "lists its runs under this card.",
        "",
    ])
    path = Path(folder) / CARD
    path.write_text(text)
    return path


def _cell(value: str) -> str:
    """A table cell: one line, no column separator."""
    return " ".join(str(value).split()).replace("|", "\\|")


def duration(seconds: float) -> str:
    """``seconds`` as a person reads it: "42 s", "7 min 05 s", "2 h 03 min"."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
