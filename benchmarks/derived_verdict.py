"""The loop's first refinement with the verdict worked out from the model's own name: label-free, and a test of
whether the name-first model's verdict, not its eyes, is what fails.

    python benchmarks/derived_verdict.py --workspace W --model MODEL --run RUN --base-run BASE

RUN is a T >= 1 run of MODEL, a name-first verdict toy (``--verdict-name-first``: step 1 answers "It is on the
small red square. Wrong colour." and a box); BASE the single shot to compare with (the paper table's reference).
``benchmarks/verdict_reads_name.py`` shows such a verdict does not read the name before it; this script reads it
instead. Per sample:

- the name step 1 gave ("It is on the <size> <colour> <kind>.", greedy, from RUN: the same text a greedy
  re-generation would give) and what the expression states for the asked object (``shapes.stated_attributes``);
- the derived verdict: "Wrong <shape|colour|size>." for the first stated attribute the name contradicts, else the
  box is kept (step 0 stays the answer);
- where it says wrong, the answer is generated again (greedy) with "It is on the <name>. Wrong <...>." forced as
  its start, and the box it then gives is the refinement.

Only the expression's words and the model's own answers are read: no ground truth picks anything. Rows: BASE's
single shot, RUN's step 0, RUN's step 1 (its own verdict) and the derived-verdict step 1, at Acc@0.5 / 0.9, wins
and losses against BASE at IoU 0.5 with the exact McNemar p, and the derived flags: how many, the share that were
wrong at step 0, the wrong ones fixed, the right ones broken. Prints a table and writes JSON (``--out``). A
measurement, not a product feature.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivt_core.derived_verdict import derived_verdict as implied_verdict  # noqa: E402
from ivt_core.teachers.geometric import KEEP_MINIMAL  # noqa: E402

TAU = 0.5


def derived_verdict(expression: str, reasoning: str) -> tuple[str, str] | None:
    """(the name sentence, "Wrong <attribute>.") when the name a refinement answer starts with contradicts what
    the expression states for the asked object (``ivt_core.derived_verdict``, the rule of ``ivt eval --verdict
    derived``); None when it agrees (step 0 is kept), or names nothing readable."""
    found = implied_verdict(expression, reasoning)
    return None if found is None or found[1] == KEEP_MINIMAL else found


def generate_after(grounder, conversation: list[dict], prefix: str, max_new_tokens: int = 60) -> str:
    """The greedy answer to ``conversation`` that starts with ``prefix`` (the prefix included): the grounder's own
    forced start (``chat_text``), as the loop's ``--verdict derived`` asks it."""
    from ivt_core.grounders.base import Sampling, assistant_message

    answer = grounder.predict([[*conversation, assistant_message(prefix)]], Sampling(max_new_tokens=max_new_tokens))
    return prefix + answer[0].text


def measure(workspace, db, grounder, run_id: int, base_run_id: int) -> dict:
    from ivt_core.boxes import iou
    from ivt_core.data.sample import load_image
    from ivt_core.loop import answer_box
    from ivt_core.paper_table import mcnemar
    from ivt_core.parse import parse_answer
    from ivt_core.prompts import get_prompts
    from ivt_core.render import RenderStyle
    from ivt_core.store.runs import get_run, load_trajectories
    from ivt_core.store.samples import get_sample
    from ivt_core.verifier import first_refinement

    run = get_run(db, run_id)
    prompts = get_prompts(grounder.family.prompt_family, run["prompt_version"])
    style = RenderStyle.from_dict(run["render_style"])
    base = {t.sample_id: t.steps[0].iou for t in load_trajectories(db, base_run_id) if t.steps}
    rows = []
    for t in load_trajectories(db, run_id):
        if t.sample_id not in base or len(t.steps) < 2:
            continue
        sample = get_sample(db, t.sample_id)
        step0, step1 = t.steps[0], t.steps[1]
        row = {"sample_id": t.sample_id, "base": base[t.sample_id], "step0": step0.iou, "step1": step1.iou,
               "derived": step0.iou, "flag": None}
        verdict = derived_verdict(sample.expression, parse_answer(step1.raw_text).reasoning or step1.raw_text)
        if verdict and step0.box is not None:
            image = load_image(workspace.resolve(sample.image_path))
            conversation = first_refinement(prompts, sample.expression, image, step0.raw_text, step0.box, style)
            answer = generate_after(grounder, conversation, " ".join(verdict) + "\n")
            box = answer_box(parse_answer(answer), step0.box, grounder, image.size)
            row.update(derived=iou(box, sample.bbox) if box is not None else 0.0, flag=" ".join(verdict))
        rows.append(row)

    def acc(key, tau):
        return sum(r[key] >= tau for r in rows) / len(rows)

    def paired(key, reference):
        wins = sum(r[key] >= TAU > r[reference] for r in rows)
        losses = sum(r[reference] >= TAU > r[key] for r in rows)
        return {"wins": wins, "losses": losses, "p": mcnemar(wins, losses)}

    flagged = [r for r in rows if r["flag"]]
    wrong = [r for r in flagged if r["step0"] < TAU]
    right = [r for r in flagged if r["step0"] >= TAU]
    return {
        "samples": len(rows),
        "rows": {key: {"acc50": acc(key, 0.5), "acc90": acc(key, 0.9), "vs_base": paired(key, "base"),
                       "vs_step0": paired(key, "step0")} for key in ("base", "step0", "step1", "derived")},
        "flags": {"flagged": len(flagged), "wrong_at_step0": len(wrong),
                  "fixed": sum(r["derived"] >= TAU for r in wrong), "broken": sum(r["derived"] < TAU for r in right)},
        "per_sample": rows,
    }


def main() -> None:
    from ivt_core.errors import IVTError
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.workspace import Workspace

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--run", type=int, required=True, help="a T >= 1 run of MODEL")
    parser.add_argument("--base-run", type=int, required=True, help="the single shot to compare with")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="build/bench/derived_verdict.json")
    args = parser.parse_args()
    try:
        workspace = Workspace.existing(args.workspace)
        grounder = TransformersGrounder.load(args.model, device=args.device)
        with workspace.connect() as db:
            result = measure(workspace, db, grounder, args.run, args.base_run)
    except IVTError as exc:
        sys.exit(f"derived_verdict.py: {exc}")
    if not result["samples"]:
        sys.exit(f"derived_verdict.py: run {args.run} has no refinement step on the samples of run {args.base_run}")
    names = {"base": f"run {args.base_run} single shot", "step0": f"run {args.run} step 0",
             "step1": f"run {args.run} step 1 (its own verdict)", "derived": "step 1, verdict from its own name"}
    print(f"\n{args.model}: {result['samples']} samples\n")
    print("| row | Acc@0.5 | Acc@0.9 | vs single shot (W / L, p) | vs its step 0 (W / L, p) |\n|---|---|---|---|---|")
    for key, v in result["rows"].items():
        b, s = v["vs_base"], v["vs_step0"]
        print(f"| {names[key]} | {v['acc50']:.3f} | {v['acc90']:.3f} | {b['wins']} / {b['losses']}, {b['p']:.3g} "
              f"| {s['wins']} / {s['losses']}, {s['p']:.3g} |")
    f = result["flags"]
    print(f"\nderived flags: {f['flagged']} ({f['wrong_at_step0']} wrong at step 0): fixed {f['fixed']}, "
          f"broke {f['broken']} of {f['flagged'] - f['wrong_at_step0']} right")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), **result}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
