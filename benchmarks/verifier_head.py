"""Is there a verifier of the model's own boxes in its frozen features? A learning curve of a linear head.

    python benchmarks/verifier_head.py --workspace W --model assets/toy-model --train-run 1 --test-run 2 \\
        --sizes 250,500,1000,2000

``ivt verifier`` reads a refinement model's P("The box is correct.") on a base run's step-0 boxes; on the toy
every SFT recipe so far gave AUROC 0.51-0.59 (docs/LOG.md, session 10), while a linear probe on the frozen base
separated ground truth from a same-shape distractor at 0.863 but the base's own boxes at 0.693
(toy-diagnosis.md). This measures whether that gap closes with more of the model's own errors: the frozen
model reads each step-0 box drawn on its image, and a logistic-regression head on its hidden states is trained
on a train-split run's boxes (right = IoU >= ``--threshold``) and scored on a test-split run's (AUROC, ties
half). Two readings of a box:

- ``refine``: the conversation ``ivt verifier`` uses (question, the model's answer, the box drawn, the refine
  prompt); features at the position that gives the verdict's first token;
- ``drawn``: one turn, the question asked about the image with the box drawn (the base's own distribution);
  features at the position that gives the answer's first token.

Features: that position's hidden state after every language layer, and the mean final hidden state over the
tokens of the image with the box drawn. For comparison, a signal that needs no training: ``confidence``, the
model's log-probability of its own step-0 answer (the answer's tokens, no box drawn), scored as is.
Scikit-learn is not a dependency, so the head is a few lines of torch (L2-regularised logistic regression,
full-batch L-BFGS on standardised features, the L2 weight picked on a fifth of the training boxes). Prints a
table and writes JSON (``--out``). A measurement, not a product feature.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _step0(trajectory) -> dict:
    step = trajectory.steps[0]
    return {"raw_text": step.raw_text, "box": step.box, "iou": step.iou}


def run_boxes(workspace, db, run_id: int, limit: int | None = None) -> tuple[dict, list, list, list[dict]]:
    """(run, samples, images, step 0s) of a run's trajectories whose step 0 has a box (the first ``limit`` by id)."""
    from ivt_core.data.sample import load_image
    from ivt_core.store.runs import get_run, load_trajectories
    from ivt_core.store.samples import get_sample

    run = get_run(db, run_id)
    steps = {t.sample_id: _step0(t) for t in load_trajectories(db, run_id) if t.steps and t.steps[0].box}
    samples = [get_sample(db, sample_id) for sample_id in sorted(steps)[:limit]]
    images = [load_image(workspace.resolve(s.image_path)) for s in samples]
    return run, samples, images, [steps[s.id] for s in samples]


def conversations(reading: str, sample, image, step0: dict, prompts, style) -> list[dict]:
    from ivt_core.render import render_box
    from ivt_core.teachers.geometric import KEEP_MINIMAL

    drawn = render_box(image, step0["box"], style)
    if reading == "drawn":
        return [{"role": "user", "content": [{"type": "image", "image": drawn},
                                             {"type": "text", "text": prompts.ground_text(sample.expression)}]},
                {"role": "assistant", "content": [{"type": "text", "text": step0["raw_text"]}]}]
    return [{"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": prompts.ground_text(sample.expression)}]},
            {"role": "assistant", "content": [{"type": "text", "text": step0["raw_text"]}]},
            {"role": "user", "content": [{"type": "image", "image": drawn},
                                         {"type": "text", "text": prompts.refine_text(sample.expression)}]},
            {"role": "assistant", "content": [{"type": "text", "text": KEEP_MINIMAL}]}]


def confidence(grounder, samples, images, steps, prompts, batch_size: int = 16):
    """[n]: log P(step-0 answer | image, question) under the model: its confidence in its own answer."""
    import torch

    from ivt_core.verifier import verdict_logprobs

    convs = [[{"role": "user", "content": [{"type": "image", "image": image},
                                           {"type": "text", "text": prompts.ground_text(sample.expression)}]},
              {"role": "assistant", "content": [{"type": "text", "text": step0["raw_text"]}]}]
             for sample, image, step0 in zip(samples, images, steps, strict=True)]
    return torch.tensor([lp for start in range(0, len(convs), batch_size)
                         for lp in verdict_logprobs(grounder, convs[start:start + batch_size])])


def features(grounder, convs: list[list[dict]], batch_size: int = 16):
    """[n, features]: at the position before the last assistant message's first token, the hidden state after
    each language layer; and the final hidden state averaged over the last image's tokens."""
    import torch

    from ivt_core.grounders.engine import _inner_model
    from ivt_core.supervision import build_example, collate

    processor, model = grounder.processor, grounder.model
    image_token = model.config.image_token_id
    rows = []
    with torch.inference_mode():
        for start in range(0, len(convs), batch_size):
            examples = [build_example(processor, c) for c in convs[start:start + batch_size]]
            batch = collate(examples, processor.tokenizer.pad_token_id or 0)
            labels = batch.pop("labels")
            out = _inner_model(model)(**batch, output_hidden_states=True)
            layers = out.hidden_states[1:] if out.hidden_states is not None else [out.last_hidden_state]
            for row, example in enumerate(examples):
                first = int((labels[row] != -100).nonzero()[0, 0]) - 1  # gives the answer's first token
                ids = batch["input_ids"][row]
                image_positions = (ids == image_token).nonzero()[:, 0]
                per_image = len(image_positions) // len(example["image_grid_thw"])
                last_image = image_positions[-per_image:]
                rows.append(torch.cat([*(h[row, first] for h in layers),
                                       out.last_hidden_state[row, last_image].mean(0)]).float())
    return torch.stack(rows)


def fit_head(x, y, l2: float):
    """Logistic regression (weights, bias) on standardised x; returns a scoring function."""
    import torch

    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return lambda xs: (((xs - mean) / std) @ w + b).detach()


def auroc_of(scores, labels) -> float | None:
    from ivt_core.verifier import auroc

    return auroc([float(s) for s, y in zip(scores, labels, strict=True) if y],
                 [float(s) for s, y in zip(scores, labels, strict=True) if not y])


def curve(train_x, train_y, test_x, test_y, sizes: list[int], seed: int) -> list[dict]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_y), generator=generator)
    rows = []
    for size in sizes:
        chosen = order[:min(size, len(order))]
        x, y = train_x[chosen], train_y[chosen]
        hold = max(1, len(chosen) // 5)
        best = None
        for l2 in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):  # picked on a held-out fifth, then refitted on all
            score = auroc_of(fit_head(x[hold:], y[hold:], l2)(x[:hold]), y[:hold].tolist())
            if score is not None and (best is None or score > best[0]):
                best = (score, l2)
        l2 = best[1] if best else 1e-2
        head = fit_head(x, y, l2)
        rows.append({"train_boxes": len(chosen), "train_wrong": int((y == 0).sum()), "l2": l2,
                     "train_auroc": auroc_of(head(x), y.tolist()),
                     "test_auroc": auroc_of(head(test_x), test_y.tolist())})
    return rows


def selection(grounder, db, test, candidate_runs: list[int], head, reading: str, threshold: float) -> list[dict]:
    """Best-of-K at equal compute, label-free: for each test sample, the test run's (greedy) box and each candidate
    run's step-0 box (e.g. sampled single shots); which one each rule picks, scored against the ground truth."""
    from ivt_core.paper_table import mcnemar, self_selected
    from ivt_core.prompts import get_prompts
    from ivt_core.render import RenderStyle
    from ivt_core.stopping import ORACLE_LABEL
    from ivt_core.store.runs import load_trajectories

    run, samples, images, steps = test
    prompts = get_prompts(grounder.family.prompt_family, run["prompt_version"])
    style = RenderStyle.from_dict(run["render_style"])
    others = [{t.sample_id: _step0(t) for t in load_trajectories(db, run_id) if t.steps and t.steps[0].box}
              for run_id in candidate_runs]
    options = [[step0, *(o[s.id] for o in others if s.id in o)] for s, step0 in zip(samples, steps, strict=True)]
    flat = [(i, option) for i, opts in enumerate(options) for option in opts]
    x = features(grounder, [conversations(reading, samples[i], images[i], o, prompts, style) for i, o in flat])
    head_scores = head(x).tolist()
    sure = confidence(grounder, [samples[i] for i, _ in flat], [images[i] for i, _ in flat], [o for _, o in flat],
                      prompts).tolist()
    by_sample: list[list[int]] = [[] for _ in options]
    for index, (i, _) in enumerate(flat):
        by_sample[i].append(index)
    rules = {
        "greedy (single shot)": lambda idx: idx[0],
        "most agreed-on box (the product's best-of-K)":
            lambda idx: idx[self_selected([flat[j][1]["box"] for j in idx])],
        "highest confidence (log P of the answer)": lambda idx: max(idx, key=lambda j: (sure[j], -j)),
        f"linear head on the frozen features ({reading})": lambda idx: max(idx, key=lambda j: (head_scores[j], -j)),
        ORACLE_LABEL: lambda idx: max(idx, key=lambda j: (flat[j][1]["iou"], -j)),
    }
    greedy = [flat[idx[0]][1]["iou"] >= threshold for idx in by_sample]
    rows = []
    for name, rule in rules.items():
        chosen = [flat[rule(idx)][1]["iou"] for idx in by_sample]
        right = [v >= threshold for v in chosen]
        wins = sum(r and not g for r, g in zip(right, greedy, strict=True))
        losses = sum(g and not r for r, g in zip(right, greedy, strict=True))
        rows.append({"rule": name, "n": len(chosen), "acc": sum(right) / len(right),
                     "acc@0.9": sum(v >= 0.9 for v in chosen) / len(chosen), "wins": wins, "losses": losses,
                     "p": mcnemar(wins, losses)})
    return rows


def main() -> None:
    import torch

    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.prompts import get_prompts
    from ivt_core.render import RenderStyle
    from ivt_core.workspace import Workspace

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--model", required=True, help="the model whose features are read (the base)")
    parser.add_argument("--train-run", required=True,
                        help="RUN[,RUN...]: runs of that model on a train split (e.g. greedy and sampled single "
                             "shots); the head learns from all their boxes")
    parser.add_argument("--test-run", type=int, required=True, help="a run of that model on a test split")
    parser.add_argument("--sizes", default="250,500,1000,2000")
    parser.add_argument("--readings", default="refine,drawn")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="at most this many boxes of each run")
    parser.add_argument("--candidates", default=None,
                        help="RUN,RUN...: other runs on the test samples (sampled single shots): best-of-K selection")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="build/bench/verifier_head.json")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    workspace = Workspace.open(args.workspace)
    grounder = TransformersGrounder.load(args.model, device=args.device)
    results = {"args": vars(args), "readings": {}}
    with workspace.connect() as db:
        runs = {"test": run_boxes(workspace, db, args.test_run, args.limit)}
        train = [run_boxes(workspace, db, int(r), args.limit) for r in args.train_run.split(",")]
    if len({(r["prompt_version"], json.dumps(r["render_style"], sort_keys=True)) for r, *_ in train}) > 1:
        sys.exit("verifier_head.py: the train runs differ in prompts or box drawing; give runs made alike")
    runs["train"] = (train[0][0], *(sum((list(part[i]) for part in train), []) for i in (1, 2, 3)))
    run, samples, images, steps = runs["test"]
    scores = confidence(grounder, samples, images, steps, get_prompts(grounder.family.prompt_family,
                                                                      run["prompt_version"]))
    results["confidence_auroc_test"] = auroc_of(scores, [st["iou"] >= args.threshold for st in steps])
    for reading in args.readings.split(","):
        data = {}
        for name, (run, samples, images, steps) in runs.items():
            prompts = get_prompts(grounder.family.prompt_family, run["prompt_version"])
            style = RenderStyle.from_dict(run["render_style"])
            start = time.perf_counter()
            x = features(grounder, [conversations(reading, s, im, st, prompts, style)
                                    for s, im, st in zip(samples, images, steps, strict=True)])
            y = torch.tensor([float(st["iou"] >= args.threshold) for st in steps])
            data[name] = (x, y)
            print(f"{reading}: {name} features {tuple(x.shape)} in {time.perf_counter() - start:.0f} s, "
                  f"right {int(y.sum())} / {len(y)}", flush=True)
        rows = curve(*data["train"], *data["test"], [int(s) for s in args.sizes.split(",")], args.seed)
        results["readings"][reading] = rows
        if args.candidates and "selection" not in results:  # the first reading's head, on all training boxes
            head = fit_head(*data["train"], rows[-1]["l2"])
            candidates = [int(c) for c in args.candidates.split(",")]
            with workspace.connect() as db:
                results["selection"] = selection(grounder, db, runs["test"], candidates, head, reading,
                                                 args.threshold)
    print(f"\nlinear head on the frozen model's features; AUROC right vs wrong (IoU >= {args.threshold}) on the "
          f"test run's step-0 boxes")
    print(f"{'reading':<8}{'train boxes':>12}{'(wrong)':>9}{'L2':>8}{'train AUROC':>13}{'test AUROC':>12}")
    for reading, rows in results["readings"].items():
        for r in rows:
            print(f"{reading:<8}{r['train_boxes']:>12}{r['train_wrong']:>9}{r['l2']:>8g}{r['train_auroc']:>13.3f}"
                  f"{r['test_auroc']:>12.3f}")
    print(f"confidence (log P of its own answer, no training): AUROC {results['confidence_auroc_test']:.3f} on "
          f"the test run")
    if results.get("selection"):
        k = 1 + len(args.candidates.split(","))
        print(f"\nbest-of-{k} on the test run's samples (its box and runs {args.candidates}), label-free except the "
              f"oracle; Acc at IoU {args.threshold}, wins / losses against greedy, McNemar p")
        for r in results["selection"]:
            print(f"  {r['rule']:<52}{r['acc']:>7.3f}{r['acc@0.9']:>8.3f}  {r['wins']:>4} W {r['losses']:>4} L  "
                  f"p={r['p']:.3g}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
