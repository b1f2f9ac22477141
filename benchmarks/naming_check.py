"""Can the model read what its own box is on? Naming as a label-free check of the model's step-0 boxes.

    python benchmarks/naming_check.py --workspace W --model MODEL --dataset shapes --split test

A verifier of the model's own boxes needs the model to see, in a drawn box, the attributes the expression asks
for; the shipped base toy cannot (its patch merger drops colour: docs/LOG.md, session 20), so no verifier built
on it catches its wrong-colour boxes. For a toy pretrained with the naming task (``--naming-prob``: one object's
box drawn, "What is inside the box?", answered "The small red circle."), two measurements on scenes whose objects
are known (the shapes world's ``meta``):

``naming``: one random object per scene, its box drawn (outline), the naming question; the share of answers that
name its size, its colour, its shape, and all three.

``self-check``: the model's own single-shot box for each sample (greedy), drawn the same way, and the naming
question; the box passes if every attribute the expression states for the object it asks about (the words before
the first shape word: "the small red circle left of ..." -> small, red, circle) is the one named. Label-free:
only the expression and the model's answers are read. Reported against the truth (IoU >= 0.5): right boxes
passed, wrong boxes caught, by kind of wrong box (``error_kinds.wrong_box_kind``: wrong shape, colour or size,
"wrong one": an identical object elsewhere, which no name can catch; loose edges; background), and the balanced
accuracy (the AUROC of the pass/fail score). Also what a rule that keeps only passing boxes would score: Acc@0.5 of
the passed boxes, and the share of all samples passed.

``select`` (``--best-of K``, 0 = off): can the check pick better boxes than single shot, label-free? K candidates
per sample: the greedy box and K-1 sampled ones (``--temperature``), each named as above. Rules: the greedy box
(single shot); the product's best-of-K self-selection (``paper_table.self_selected``: the candidate agreeing most
with the others); the first candidate that passes the check (greedy first; the greedy box when none passes); the
passing candidate agreeing most with all candidates (agreement alone when none passes). Acc@0.5 / 0.9 of each,
wins and losses against single shot at IoU 0.5 and the exact McNemar p.

Prints tables and writes JSON (``--out``). A measurement, not a product feature.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivt_core.data.shapes import COLOURS, KINDS, SIZES, stated_attributes  # noqa: E402


def named_attributes(answer: str) -> dict[str, str]:
    """What a naming answer ("The small red circle.") names: the first size, colour and shape words in it."""
    named = {}
    for word in answer.lower().replace(".", " ").replace(",", " ").split():
        for key, vocabulary in (("size", SIZES), ("colour", COLOURS), ("kind", KINDS)):
            if word in vocabulary and key not in named:
                named[key] = word
    return named


def passes_check(expression: str, answer: str) -> bool:
    """The self-check: the naming answer names every attribute the expression states for the asked object."""
    stated, named = stated_attributes(expression), named_attributes(answer)
    return bool(stated) and all(named.get(key) == value for key, value in stated.items())


def ask_names(grounder, images, batch_size: int) -> list[str]:
    """The model's greedy answer to the naming question on each image (a box already drawn on it)."""
    from ivt_core.grounders.base import Sampling
    from training.toy_pretrain import NAMING_QUESTIONS

    conversations = [[{"role": "user", "content": [{"type": "image", "image": image},
                                                  {"type": "text", "text": NAMING_QUESTIONS[0]}]}]
                     for image in images]
    answers = []
    for i in range(0, len(conversations), batch_size):
        answers += [g.text for g in grounder.predict(conversations[i:i + batch_size], Sampling(max_new_tokens=16))]
    return answers


def naming_accuracy(grounder, samples, images, batch_size: int, seed: int = 0) -> dict:
    from ivt_core.boxes import Box
    from ivt_core.render import RENDER_STYLES, render_box

    rng = random.Random(seed)
    picked = [rng.choice(s.meta["objects"]) for s in samples]
    drawn = [render_box(im, Box(*o["box"]), RENDER_STYLES["outline"]) for im, o in zip(images, picked, strict=True)]
    answers = ask_names(grounder, drawn, batch_size)
    right = Counter()
    for o, answer in zip(picked, answers, strict=True):
        named = named_attributes(answer)
        hits = {key: named.get(key) == o[key] for key in ("size", "colour", "kind")}
        right.update(key for key, hit in hits.items() if hit)
        right["all"] += all(hits.values())
    return {"objects": len(picked), **{key: right[key] / len(picked) for key in ("size", "colour", "kind", "all")},
            "examples": [{"object": o, "answer": a} for o, a in list(zip(picked, answers, strict=True))[:10]]}


def self_check(grounder, samples, images, batch_size: int) -> dict:
    from ivt_core.boxes import iou
    from ivt_core.error_kinds import wrong_box_kind
    from ivt_core.loop import LoopConfig, run_samples
    from ivt_core.render import RENDER_STYLES, render_box

    trajectories = run_samples(grounder, samples, LoopConfig(steps=0, batch_size=batch_size), images)
    rows, drawn, asked = [], [], []
    for sample, image, trajectory in zip(samples, images, trajectories, strict=True):
        box = trajectory.steps[0].box
        row = {"id": sample.id, "expression": sample.expression, "right": bool(box and iou(box, sample.bbox) >= 0.5),
               "kind": wrong_box_kind(box, sample.bbox, sample.meta), "passed": False}
        if box is not None:
            drawn.append(render_box(image, box, RENDER_STYLES["outline"]))
            asked.append(row)
        rows.append(row)
    for row, answer in zip(asked, ask_names(grounder, drawn, batch_size), strict=True):
        row["answer"], row["passed"] = answer, passes_check(row["expression"], answer)
    right = [r for r in rows if r["right"]]
    wrong = [r for r in rows if not r["right"]]
    passed = [r for r in rows if r["passed"]]
    kept_right = sum(r["passed"] for r in right) / len(right) if right else None
    caught = sum(not r["passed"] for r in wrong) / len(wrong) if wrong else None
    by_kind = {}
    for kind in sorted({r["kind"] for r in wrong}):
        mine = [r for r in wrong if r["kind"] == kind]
        by_kind[kind] = {"boxes": len(mine), "caught": sum(not r["passed"] for r in mine) / len(mine)}
    return {
        "samples": len(rows), "right": len(right), "wrong": len(wrong),
        "right_passed": kept_right, "wrong_caught": caught,
        "balanced_accuracy": (kept_right + caught) / 2 if right and wrong else None,
        "wrong_by_kind": by_kind,
        "passed_share": len(passed) / len(rows),
        "acc50_of_passed": sum(r["right"] for r in passed) / len(passed) if passed else None,
        "acc50_all": len(right) / len(rows),
        "rows": rows,
    }


def select(grounder, samples, images, batch_size: int, k: int, temperature: float, seed: int = 0) -> dict:
    import torch

    from ivt_core.boxes import iou
    from ivt_core.grounders.base import Sampling
    from ivt_core.loop import LoopConfig, run_samples
    from ivt_core.paper_table import mcnemar, self_selected
    from ivt_core.render import RENDER_STYLES, render_box

    candidates = [[t.steps[0].box] for t in run_samples(grounder, samples, LoopConfig(steps=0, batch_size=batch_size),
                                                        images)]
    for j in range(1, k):
        torch.manual_seed(seed + j)
        sampled = LoopConfig(steps=0, batch_size=batch_size, sampling=Sampling(do_sample=True, temperature=temperature))
        for boxes, t in zip(candidates, run_samples(grounder, samples, sampled, images), strict=True):
            boxes.append(t.steps[0].box)
    where = [(i, j) for i, boxes in enumerate(candidates) for j, box in enumerate(boxes) if box is not None]
    answers = ask_names(grounder, [render_box(images[i], candidates[i][j], RENDER_STYLES["outline"])
                                   for i, j in where], batch_size)
    passes = [[False] * k for _ in samples]
    for (i, j), answer in zip(where, answers, strict=True):
        passes[i][j] = passes_check(samples[i].expression, answer)

    def agreeing_passer(boxes, passed):
        keep = [j for j in range(k) if passed[j]]
        if not keep:
            return self_selected(boxes)
        return max(keep, key=lambda j: (sum(iou(boxes[j], b) for b in boxes), -j))

    rules = {
        "single shot (greedy)": lambda boxes, passed: 0,
        "best-of-K, agreement (the product's)": lambda boxes, passed: self_selected(boxes),
        "first passing the naming check": lambda boxes, passed: next((j for j in range(k) if passed[j]), 0),
        "passing, then agreement": agreeing_passer,
    }
    greedy = [iou(boxes[0], s.bbox) >= 0.5 for boxes, s in zip(candidates, samples, strict=True)]
    out = {"k": k, "temperature": temperature,
           "any_candidate_right": sum(any(iou(b, s.bbox) >= 0.5 for b in boxes)
                                      for boxes, s in zip(candidates, samples, strict=True)) / len(samples)}
    for name, rule in rules.items():
        ious = [iou(boxes[rule(boxes, passed)], s.bbox)
                for boxes, passed, s in zip(candidates, passes, samples, strict=True)]
        right = [v >= 0.5 for v in ious]
        wins = sum(r and not g for r, g in zip(right, greedy, strict=True))
        losses = sum(g and not r for r, g in zip(right, greedy, strict=True))
        out[name] = {"acc50": sum(right) / len(right), "acc90": sum(v >= 0.9 for v in ious) / len(ious),
                     "wins": wins, "losses": losses, "p": mcnemar(wins, losses)}
    return out


def main() -> None:
    from known_scenes import add_scene_arguments, load_known_scenes, write_result

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_scene_arguments(parser, "build/bench/naming_check.json")
    parser.add_argument("--best-of", type=int, default=0, help="K candidates per sample for the select part (0: off)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the candidates")
    args = parser.parse_args()
    samples, images, grounder = load_known_scenes(args, "naming_check.py")
    result = {"args": vars(args),
              "naming": naming_accuracy(grounder, samples, images, args.batch_size),
              "self_check": self_check(grounder, samples, images, args.batch_size)}
    if args.best_of > 1:
        result["select"] = select(grounder, samples, images, args.batch_size, args.best_of, args.temperature)
    print_result(result, args)
    write_result(result, args.out)


def print_result(result: dict, args) -> None:
    n = result["naming"]
    print(f"\n{args.model} on {args.dataset}/{args.split}\n")
    print("| naming a drawn box | objects | size | colour | shape | all three |\n|---|---|---|---|---|---|")
    print(f"| random object | {n['objects']} | {n['size']:.3f} | {n['colour']:.3f} | {n['kind']:.3f} "
          f"| {n['all']:.3f} |")
    c = result["self_check"]

    def pct(x):
        return "-" if x is None else f"{x:.3f}"

    print("\n| self-check of its own step-0 boxes | value |\n|---|---|")
    print(f"| samples (right / wrong at IoU 0.5) | {c['samples']} ({c['right']} / {c['wrong']}) |")
    print(f"| right boxes passed | {pct(c['right_passed'])} |")
    print(f"| wrong boxes caught | {pct(c['wrong_caught'])} |")
    print(f"| balanced accuracy (AUROC of pass/fail) | {pct(c['balanced_accuracy'])} |")
    print(f"| Acc@0.5 of all boxes / of passed boxes ({c['passed_share']:.2f} of samples) | "
          f"{c['acc50_all']:.3f} / {pct(c['acc50_of_passed'])} |")
    print("\n| wrong box: what differs | boxes | caught |\n|---|---|---|")
    for kind, v in sorted(c["wrong_by_kind"].items(), key=lambda kv: -kv[1]["boxes"]):
        print(f"| {kind} | {v['boxes']} | {v['caught']:.2f} |")
    if "select" in result:
        sel = result["select"]
        print(f"\n| K = {sel['k']} candidates (temperature {sel['temperature']}; one right: "
              f"{sel['any_candidate_right']:.3f}) | Acc@0.5 | Acc@0.9 | wins / losses vs single shot | McNemar p |")
        print("|---|---|---|---|---|")
        for name, v in sel.items():
            if isinstance(v, dict):
                print(f"| {name} | {v['acc50']:.3f} | {v['acc90']:.3f} | {v['wins']} / {v['losses']} | {v['p']:.3g} |")


if __name__ == "__main__":
    main()
