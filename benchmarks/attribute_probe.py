"""Does the model see an object's colour, and does it bind the colour word? Two measurements on known scenes.

    python benchmarks/attribute_probe.py --workspace W --model assets/toy-model --dataset shapes --split test

The toy's single-shot errors are mostly the right shape in the wrong colour (91 of 119 on shapes-v1 test), and
so is what its verifiers fail to reject (docs/LOG.md, session 19). Explanations predict different things:
colours it cannot tell apart (then the errors gather on look-alike colours, red/orange, blue/purple), colour lost
somewhere in the vision tower (then a linear probe stops finding it at that stage), or a colour word it does not
bind although it sees the colour. Two parts (``--parts``), on the scenes of a split whose objects are known (the
shapes world's ``meta``):

``words``: every question the expression generator itself would write to single out one object by its shape and
colour, answered single shot (greedy); the boxed object is the one the box overlaps most at IoU >= 0.5 (or none).

- colour questions, "the <colour> <shape>", for every object that shares its shape with an object of another
  colour and is the only one of its shape and colour (only the colour word tells them apart);
- shape questions, "the <colour> <shape>", for every object that shares its colour with an object of another
  shape and is the only one of its shape and colour (only the shape word does).

Per kind of question: accuracy, the accuracy of a guess among the objects the other word leaves (the mean of
1/k), the share of scenes where every question got the same object whatever its word (the word ignored), and,
over the colour questions' misses, each colour pair against what a uniform guess among the scene's same-shape
objects would give.

``vision``: the vision tower's state at each stage (the pixels, the patch embedding, each block, the patch
merger's input norm, first layer and output: what the language model reads, and each deepstack merger) at the
patch holding each object's centre (the merged token holding it after the mergers); a linear probe
(multinomial logistic regression, L2 weight picked on a validation fifth, scored on a held-out fifth of the
objects) predicts the object's colour and its shape from it. Scikit-learn is not a dependency: the probe is a
few lines of torch (full-batch L-BFGS on standardised features).

Prints tables and writes JSON (``--out``). A measurement, not a product feature.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def questions(sample) -> list[tuple[str, int, list[int]]]:
    """(kind of question, the asked object, the objects the other word leaves) for every question of the scene."""
    objects = sample.meta["objects"]
    out = []
    for i, o in enumerate(objects):
        if sum(p["kind"] == o["kind"] and p["colour"] == o["colour"] for p in objects) > 1:
            continue  # "the <colour> <shape>" would not single it out
        same_shape = [j for j, p in enumerate(objects) if p["kind"] == o["kind"]]
        same_colour = [j for j, p in enumerate(objects) if p["colour"] == o["colour"]]
        if len({objects[j]["colour"] for j in same_shape}) > 1:
            out.append(("colour", i, same_shape))
        if len({objects[j]["kind"] for j in same_colour}) > 1:
            out.append(("shape", i, same_colour))
    return out


def boxed_object(box, objects) -> int | None:
    """The object ``box`` overlaps most, if at IoU >= 0.5 (the accuracy threshold), else None."""
    from ivt_core.teachers.geometric import covered_object

    if box is None:
        return None
    index, overlap = covered_object(box, objects)
    return index if overlap >= 0.5 else None


def measure(grounder, samples, images, batch_size: int) -> list[dict]:
    """One row per question: the scene, the question, the asked and the boxed object."""
    from ivt_core.boxes import Box
    from ivt_core.loop import LoopConfig, run_samples

    asked, asked_images, rows = [], [], []
    for sample, image in zip(samples, images, strict=True):
        objects = sample.meta["objects"]
        for n, (kind, target, candidates) in enumerate(questions(sample)):
            o = objects[target]
            text = f"the {o['colour']} {o['kind']}"
            asked.append(replace(sample, id=f"{sample.id}/{kind}{n}", expression=text, bbox=Box(*o["box"])))
            asked_images.append(image)
            rows.append({"scene": sample.id, "kind": kind, "expression": text, "target": target,
                         "candidates": candidates, "size": o["size"]})
    trajectories = run_samples(grounder, asked, LoopConfig(steps=0, batch_size=batch_size), asked_images)
    for row, sample, trajectory in zip(rows, asked, trajectories, strict=True):
        row["boxed"] = boxed_object(trajectory.steps[0].box, sample.meta["objects"])
    return rows


def summarize(rows: list[dict], samples) -> dict:
    objects = {s.id: s.meta["objects"] for s in samples}
    out = {}
    for kind in ("colour", "shape"):
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        by_scene = defaultdict(list)
        for r in mine:
            by_scene[r["scene"]].append(r)
        several = [rs for rs in by_scene.values() if len(rs) > 1]
        by_size = {size: [r for r in mine if r["size"] == size] for size in ("small", "large")}
        out[kind] = {
            "questions": len(mine),
            "scenes": len(by_scene),
            "accuracy": sum(r["boxed"] == r["target"] for r in mine) / len(mine),
            "chance": sum(1 / len(r["candidates"]) for r in mine) / len(mine),
            "boxed_outside_candidates": sum(r["boxed"] not in r["candidates"] for r in mine) / len(mine),
            "scenes_with_several_questions": len(several),
            "word_ignored": (sum(len({r["boxed"] for r in rs}) == 1 and rs[0]["boxed"] is not None
                                 for rs in several) / len(several)) if several else None,
            "accuracy_by_size": {size: (sum(r["boxed"] == r["target"] for r in rs) / len(rs), len(rs))
                                 for size, rs in by_size.items() if rs},
        }
    misses, null = Counter(), Counter()
    for r in rows:
        if r["kind"] != "colour" or r["boxed"] == r["target"] or r["boxed"] not in r["candidates"]:
            continue
        scene = objects[r["scene"]]
        asked = scene[r["target"]]["colour"]
        misses["/".join(sorted((asked, scene[r["boxed"]]["colour"])))] += 1
        others = [j for j in r["candidates"] if j != r["target"]]
        for j in others:
            null["/".join(sorted((asked, scene[j]["colour"])))] += 1 / len(others)
    out["colour_miss_pairs"] = {pair: {"misses": misses[pair], "uniform_guess": round(null[pair], 1)}
                                for pair in sorted(null, key=lambda p: -misses[p])}
    return out


def vision_states(grounder, samples, images) -> tuple[dict[str, list], list[tuple[str, str]]]:
    """The vision tower's states at each stage for every object of the scenes (``vision`` above), with the
    objects' (colour, shape)."""
    import torch

    from ivt_core.grounders.engine import _inner_model

    inner = _inner_model(grounder.model)
    visual = inner.visual
    caught: dict = {}

    def keep(name):
        def hook(module, args, output):
            caught[name] = (output[0] if isinstance(output, tuple) else output).detach()
        return hook

    stages = [("patch embedding", visual.patch_embed)] + [(f"block {i}", b) for i, b in enumerate(visual.blocks)]
    stages += [("merger norm", visual.merger.norm), ("merger layer 1", visual.merger.linear_fc1),
               ("merger output", visual.merger)]
    stages += [(f"deepstack merger {i}", m) for i, m in enumerate(getattr(visual, "deepstack_merger_list", []))]
    hooks = [module.register_forward_hook(keep(name)) for name, module in stages]
    merge = visual.spatial_merge_size
    states: dict[str, list] = {}
    labels = []
    try:
        with torch.no_grad():
            for sample, image in zip(samples, images, strict=True):
                inputs = grounder.processor.image_processor(images=[image], return_tensors="pt")
                pixels = inputs["pixel_values"].to(grounder.model.device)
                inner.get_image_features(pixels, inputs["image_grid_thw"].to(pixels.device))
                caught["pixels"] = pixels
                _, h, w = inputs["image_grid_thw"][0].tolist()
                patch = grounder.processor.image_processor.patch_size
                for o in sample.meta["objects"]:
                    r = min(h - 1, int(o["cy"] * h * patch / sample.height // patch))
                    c = min(w - 1, int(o["cx"] * w * patch / sample.width // patch))
                    # patches come merge window by merge window, the windows row by row
                    k = ((r // merge) * (w // merge) + c // merge) * merge ** 2 + (r % merge) * merge + c % merge
                    for name, x in caught.items():
                        x = x.reshape(-1, x.shape[-1])
                        states.setdefault(name, []).append(x[k] if len(x) == h * w else x[k // merge ** 2])
                    labels.append((o["colour"], o["kind"]))
    finally:
        for hook in hooks:
            hook.remove()
    order = ["pixels"] + [name for name, _ in stages]
    return {name: states[name] for name in order if name in states}, labels


def linear_probe(x, labels: list[str], seed: int = 0) -> float:
    """Held-out accuracy of a multinomial logistic regression predicting ``labels`` from the rows of ``x``."""
    import random

    import torch

    classes = sorted(set(labels))
    y = torch.tensor([classes.index(v) for v in labels])
    order = list(range(len(y)))
    random.Random(seed).shuffle(order)
    fifth = len(order) // 5
    test, val, train = order[:fifth], order[fifth:2 * fifth], order[2 * fifth:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean) / std

    def fit(l2: float, rows: list[int]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(x.shape[1], len(classes))
        optimizer = torch.optim.LBFGS(head.parameters(), max_iter=200)

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(x[rows]), y[rows]) + l2 * head.weight.pow(2).sum()
            loss.backward()
            return loss
        optimizer.step(closure)
        return head

    def accuracy(head, rows):
        with torch.no_grad():
            return (head(x[rows]).argmax(1) == y[rows]).float().mean().item()

    l2 = max((1e-3, 1e-2, 1e-1), key=lambda v: accuracy(fit(v, train), val))
    return accuracy(fit(l2, train + val), test)


def probe_vision(grounder, samples, images) -> dict:
    import torch

    states, labels = vision_states(grounder, samples, images)
    out = {"objects": len(labels), "chance": {}, "stages": {}}
    for j, attribute in enumerate(("colour", "shape")):
        values = [label[j] for label in labels]
        out["chance"][attribute] = max(values.count(v) for v in set(values)) / len(values)
    for name, rows in states.items():
        x = torch.stack(rows).float().cpu()
        out["stages"][name] = {"dim": x.shape[1], **{attribute: linear_probe(x, [label[j] for label in labels])
                                                     for j, attribute in enumerate(("colour", "shape"))}}
    return out


def main() -> None:
    from known_scenes import add_scene_arguments, load_known_scenes, write_result

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_scene_arguments(parser, "build/bench/attribute_probe.json")
    parser.add_argument("--parts", default="words,vision", help="words, vision or both (comma-separated)")
    parser.add_argument("--vision-scenes", type=int, default=300, help="scenes whose objects the vision probe reads")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts or parts - {"words", "vision"}:
        sys.exit(f"attribute_probe.py: --parts takes words, vision or both, got {args.parts!r}")
    samples, images, grounder = load_known_scenes(args, "attribute_probe.py")
    result = {"args": vars(args)}
    if "words" in parts:
        rows = measure(grounder, samples, images, args.batch_size)
        result["words"] = {"summary": summarize(rows, samples), "rows": rows}
        print_words(result["words"]["summary"], args, len(samples))
    if "vision" in parts:
        n = min(args.vision_scenes, len(samples))
        result["vision"] = probe_vision(grounder, samples[:n], images[:n])
        print_vision(result["vision"], args, n)
    write_result(result, args.out)


def print_words(summary: dict, args, scenes: int) -> None:
    print(f"{args.model} on {scenes} {args.dataset}/{args.split} scenes, single shot, greedy")
    print("| question | n (scenes) | accuracy | guess among the other word's objects | boxed outside them | "
          "word ignored (scenes with 2+ questions) | accuracy small / large |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("colour", "shape"):
        s = summary.get(kind)
        if not s:
            continue
        sizes = " / ".join(f"{a:.2f} ({n})" for a, n in s["accuracy_by_size"].values())
        several = s["scenes_with_several_questions"]
        ignored = "-" if s["word_ignored"] is None else f"{s['word_ignored']:.2f} ({several})"
        print(f"| {kind} word | {s['questions']} ({s['scenes']}) | {s['accuracy']:.3f} | {s['chance']:.3f} | "
              f"{s['boxed_outside_candidates']:.3f} | {ignored} | {sizes} |")
    print("\ncolour questions' misses on another colour of the shape, by colour pair:")
    print("| pair | misses | a uniform guess among the scene's same-shape objects |")
    print("|---|---|---|")
    for pair, c in summary["colour_miss_pairs"].items():
        print(f"| {pair} | {c['misses']} | {c['uniform_guess']} |")


def print_vision(vision: dict, args, scenes: int) -> None:
    chance = vision["chance"]
    print(f"\n{args.model}: linear probes of the vision tower at each object's centre ({vision['objects']} objects "
          f"of {scenes} scenes; held-out accuracy; the most common class: colour {chance['colour']:.3f}, "
          f"shape {chance['shape']:.3f})")
    print("| stage | dim | colour | shape |")
    print("|---|---|---|---|")
    for name, row in vision["stages"].items():
        print(f"| {name} | {row['dim']} | {row['colour']:.3f} | {row['shape']:.3f} |")


if __name__ == "__main__":
    main()
