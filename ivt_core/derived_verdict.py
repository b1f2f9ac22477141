"""The derived verdict: a refinement's verdict worked out from the model's own name for what its box is on.

A name-first toy (``--verdict-name-first``) answers a refinement turn "It is on the small red square. Wrong
colour." and a box. Its names are right 93 % of the time, but its verdict does not read them (docs/LOG.md,
session 23: P(keep) the same whether the name agrees with the expression or contradicts it). With
``LoopConfig.verdict == "derived"`` the loop keeps the model's name and replaces its verdict by what follows from
that name and the expression's words: "Wrong <shape|colour|size>." for the first attribute the expression states
(``shapes.stated_attributes``) that the named object does not have (the training teacher's ``minimal_verdict``),
else "The box is correct." (the box is kept). The model then goes on from that start and gives the box.

Label-free: only the expression's words and the model's own answers are read, no ground truth, no threshold. It
is the shapes world's rule (expressions that state size, colour and shape in known words, and answers that name
the boxed object in the "It is on the <size> <colour> <kind>." form): on an answer with no such name the model's
own answer stands, so a model that never names changes nothing.
"""

from __future__ import annotations

import re

from ivt_core.data.shapes import stated_attributes
from ivt_core.teachers.geometric import KEEP_MINIMAL, minimal_verdict

NAME = re.compile(r"It is on the ([a-z]+) ([a-z]+) ([a-z]+)\.")
WRONG_ONE = "Wrong one."  # what minimal_verdict says when no stated attribute differs
VERDICTS = ("own", "derived")  # ``LoopConfig.verdict``: the model's own, or derived from its name


def derived_verdict(expression: str, answer: str) -> tuple[str, str] | None:
    """(the name sentence, the verdict it implies) for a refinement answer that names the object its box is on:
    "Wrong <attribute>." for the first stated attribute the name contradicts, else "The box is correct.". None
    when the answer names nothing readable."""
    found = NAME.search(answer)
    if not found:
        return None
    named = dict(zip(("size", "colour", "kind"), found.groups(), strict=True))
    stated = stated_attributes(expression)
    verdict = minimal_verdict(named, {**named, **stated}, stated)
    return found.group(0), KEEP_MINIMAL if verdict == WRONG_ONE else verdict


def forced_start(expression: str, answer: str) -> str | None:
    """The start the answer must have under the derived verdict ("It is on the small red square. Wrong colour.\\n",
    the model's own line break before its box), or None when the model's own answer stands: it names nothing
    readable, or it already starts that way (greedy decoding would go on as it did)."""
    derived = derived_verdict(expression, answer)
    if derived is None:
        return None
    start = " ".join(derived) + "\n"
    return None if answer.startswith(start.rstrip()) else start
