"""Does a name-first verdict read its own name? The name given to it, against the box drawn.

    python benchmarks/verdict_reads_name.py --workspace W --model MODEL --dataset shapes2 --split test

A toy trained with ``--verdict-name-first`` answers a refinement turn "It is on the small red square. Wrong
colour." and then a box. If its verdict were worked out from its name and the expression ("the blue square"), a
name that agrees with the expression would be followed by "The box is correct." and one that contradicts it by a
"Wrong ..."; if the verdict reads the drawn box instead (or neither), the name makes no difference. This script
gives it the name and reads what follows, on scenes whose expression states a colour and that hold an object of
the asked kind in another colour (the toy's own errors are mostly those):

- the box drawn: the asked object's (right) or that other object's (wrong), given as the model's first answer;
- the name forced after the refine prompt: "It is on the <size> <colour> <kind>." with the colour the expression
  states (agrees) or the other object's colour (contradicts); size and kind those of the boxed object;
- P(keep) = P("The box is correct." | the conversation, the forced name), as ``ivt verifier --reasoning-first``
  reads it after the model's own reasoning.

Four cells, mean P(keep) and the share above 0.5. A verdict that reads its name follows the columns (high when the
name agrees, low when it contradicts); one that reads the box follows the rows. Prints a table and writes JSON
(``--out``). A measurement, not a product feature.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivt_core.data.shapes import stated_attributes  # noqa: E402

CELLS = (("right", "agrees"), ("right", "contradicts"), ("wrong", "agrees"), ("wrong", "contradicts"))


def probe_cases(samples) -> list[dict]:
    """Per usable scene: the asked object, a same-kind object of another colour, the expression's colour."""
    cases = []
    for sample in samples:
        stated = stated_attributes(sample.expression)
        objects = sample.meta["objects"]
        target = objects[sample.meta["target"]]
        if "colour" not in stated or target["colour"] != stated["colour"]:
            continue
        others = [o for o in objects if o is not target and o["kind"] == target["kind"]
                  and o["colour"] != target["colour"]]
        if others:
            cases.append({"sample": sample, "right": target, "wrong": others[0], "colour": stated["colour"],
                          "other_colour": others[0]["colour"]})
    return cases


def keep_probabilities(grounder, cases: list[dict], images: dict, batch_size: int) -> dict[tuple, list[float]]:
    """P(keep | forced name) for every case in each of the four cells."""
    from ivt_core.boxes import Box
    from ivt_core.prompts import get_prompts
    from ivt_core.render import RENDER_STYLES
    from ivt_core.verifier import first_refinement, keep_logprobs
    from training.toy_pretrain import answer_text

    prompts = get_prompts(grounder.family.prompt_family)
    out = {cell: [] for cell in CELLS}
    items = [(case, cell) for case in cases for cell in CELLS]
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        conversations, names = [], []
        for case, (box_kind, name_kind) in chunk:
            sample, boxed = case["sample"], case[box_kind]
            image, box = images[sample.id], Box(*boxed["box"])
            colour = case["colour"] if name_kind == "agrees" else case["other_colour"]
            names.append(f"It is on the {boxed['size']} {colour} {boxed['kind']}.")
            conversations.append(first_refinement(prompts, sample.expression, image, answer_text(box, image.size),
                                                  box, RENDER_STYLES["outline"]))
        for (_, cell), logp in zip(chunk, keep_logprobs(grounder, conversations, names), strict=True):
            out[cell].append(min(1.0, math.exp(logp)))
    return out


def summarize(probabilities: dict[tuple, list[float]]) -> dict:
    return {f"{box} box, name {name}": {"n": len(ps), "mean_p_keep": sum(ps) / len(ps) if ps else None,
                                        "share_above_half": sum(p > 0.5 for p in ps) / len(ps) if ps else None}
            for (box, name), ps in probabilities.items()}


def main() -> None:
    from known_scenes import add_scene_arguments, load_known_scenes, write_result

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_scene_arguments(parser, "build/bench/verdict_reads_name.json")
    args = parser.parse_args()
    samples, images, grounder = load_known_scenes(args, "verdict_reads_name.py")
    cases = probe_cases(samples)
    if not cases:
        sys.exit("verdict_reads_name.py: no scene states a colour and holds a same-kind object of another colour")
    by_id = {s.id: im for s, im in zip(samples, images, strict=True)}
    result = {"args": vars(args), "scenes": len(cases),
              "cells": summarize(keep_probabilities(grounder, cases, by_id, args.batch_size))}
    print(f"\n{args.model} on {args.dataset}/{args.split}: {len(cases)} scenes\n")
    print("| box drawn | name forced | P(keep) mean | P(keep) > 0.5 |\n|---|---|---|---|")
    for cell, v in result["cells"].items():
        box, name = cell.split(", ")
        print(f"| {box} | {name} | {v['mean_p_keep']:.3f} | {v['share_above_half']:.2f} |")
    write_result(result, args.out)


if __name__ == "__main__":
    main()
