"""The paper's table, from a workspace's runs: does the IVT loop beat single shot, and at what?

Rows, as the paper lays them out: base single shot, naive IVT (the base model in the loop), then each trained
model in the loop (SFT + IVT, SFT + GRPO + IVT; a run made with ``--verdict derived`` says so in its label: its
verdicts follow from the model's names, not its own words). ``paper_table(db, [base_run, sft_run, grpo_run])``:
the first run is the base model's; its step 0 *is* the single shot (greedy), and, when it ran refinement steps, the run
itself is the naive-IVT row. Every run is restricted to the samples all the runs share.

Each row gives Acc@0.5 / 0.7 / 0.9 at step 0, at the final step, under the best label-free stopping rule (chosen
on this very split, so an optimistic pick, said so) and under the oracle (best step by ground truth: not
deployable, labelled). Per refinement step t: degradation (mean IoU lost), fix rate (wrong at t-1, right at t)
and break rate (right at t-1, wrong at t), at IoU 0.5, over the samples that reached step t; and, of the answers
step t changed, how many were wrong before, how many of those it fixed and of the right ones it broke: the
loop gains only when the model's precision at calling its box wrong is above the share those rates set
(``changes``). Each row's final
step and best rule are tested against single shot with an exact McNemar test on the paired right/wrong outcomes
at IoU 0.5 (wins: single shot wrong and the row right; losses: the reverse).

The baseline the loop must beat at equal compute: **best-of-K self-selection** (``best_of``: K-1 runs of the
same base model on the same split at a sampling temperature, T=0; the base run's greedy step 0 is the first
candidate). Per sample, the candidate whose box agrees most with the others (largest summed IoU; ties to the
greedy answer) is the answer: label-free, no refinement. A T-step loop makes up to T+1 answers per sample, the
compute of best-of-(T+1).

Why not scipy's McNemar: the exact two-sided binomial test is a few lines with ``math.comb``, and scipy is not
otherwise a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean

from sqlite_utils import Database

from ivt_core.boxes import iou
from ivt_core.errors import InvalidInputError
from ivt_core.metrics import policy_ious, run_metrics
from ivt_core.records import Trajectory
from ivt_core.stopping import LABEL_FREE_POLICIES, ORACLE_LABEL
from ivt_core.store.models import get_model
from ivt_core.store.runs import get_run, load_trajectories, run_verdict

TABLE_THRESHOLDS = (0.5, 0.7, 0.9)
TAU = 0.5
SAME_BOX_IOU = 0.99  # a refinement answer this close to the box before it kept it (the verdict's kept box is equal)


def mcnemar(wins: int, losses: int) -> float:
    """Exact two-sided McNemar p-value for ``wins`` and ``losses`` discordant pairs (1.0 when there are none)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def step_rates(trajectories: Sequence[Trajectory], tau: float = TAU) -> list[dict]:
    """Per refinement step t >= 1: samples reaching it, degradation, fix rate and break rate (at IoU ``tau``),
    and the account of the answers it changed (``changes``)."""
    longest = max((t.stop_step for t in trajectories), default=0)
    rows = []
    for step in range(1, longest + 1):
        reached = [t for t in trajectories if t.stop_step >= step]
        pairs = [(t.steps[step - 1].iou, t.steps[step].iou) for t in reached]
        n = len(pairs)
        rows.append({"step": step, "n": n,
                     "degradation": fmean(max(0.0, a - b) for a, b in pairs) if n else 0.0,
                     "fix": sum(a < tau <= b for a, b in pairs) / n if n else 0.0,
                     "break": sum(b < tau <= a for a, b in pairs) / n if n else 0.0,
                     **changes([(t.steps[step - 1], t.steps[step]) for t in reached], tau)})
    return rows


def changes(pairs: Sequence[tuple], tau: float = TAU) -> dict:
    """Why a step gains or loses, from the answers it changed (a box moved to IoU < ``SAME_BOX_IOU`` with the one
    before it, or unreadable): how many (``changed``), the share of them that were wrong before (``changed_wrong``,
    the model's precision at calling its box wrong), the share of those it fixed (``fixed_of_wrong``), the share of
    the right ones it broke (``broken_of_right``), and the precision above which changing gains (``pays_above``:
    fixed_of_wrong x p = broken_of_right x (1 - p)). None where there is nothing to count."""
    moved = [(a.iou, b.iou) for a, b in pairs
             if a.box is None or b.box is None or iou(a.box, b.box) < SAME_BOX_IOU]
    wrong = [b for a, b in moved if a < tau]
    right = [b for a, b in moved if a >= tau]
    fixed = sum(b >= tau for b in wrong) / len(wrong) if wrong else None
    broken = sum(b < tau for b in right) / len(right) if right else None
    pays = broken / (fixed + broken) if fixed is not None and broken is not None and fixed + broken else None
    return {"changed": len(moved), "changed_wrong": len(wrong) / len(moved) if moved else None,
            "fixed_of_wrong": fixed, "broken_of_right": broken, "pays_above": pays}


def changes_text(s: dict) -> str:
    """A step's ``changes`` in words: "changed 121 answers, 42% of them wrong before: fixed 49% of the wrong ones,
    broke 76% of the right ones (changing gains above 61% wrong)"."""
    if not s.get("changed"):
        return "changed no answer"
    done = [f"{verb} {share:.0%} of the {kind} ones" for verb, share, kind in
            (("fixed", s["fixed_of_wrong"], "wrong"), ("broke", s["broken_of_right"], "right")) if share is not None]
    return (f"changed {s['changed']} answer{'s' if s['changed'] > 1 else ''}, {s['changed_wrong']:.0%} of them "
            f"wrong before: " + ", ".join(done)
            + (f" (changing gains above {s['pays_above']:.0%} wrong)" if s["pays_above"] is not None else ""))


def _paired(reference: list[bool], row: list[bool]) -> dict:
    wins = sum(r and not s for s, r in zip(reference, row, strict=True))
    losses = sum(s and not r for s, r in zip(reference, row, strict=True))
    return {"wins": wins, "losses": losses, "p": mcnemar(wins, losses)}


def _accs(ious: Sequence[float]) -> dict:
    return {f"acc@{tau:g}": sum(v >= tau for v in ious) / len(ious) for tau in TABLE_THRESHOLDS}


def _row(label: str, run_id: int, trajectories: list[Trajectory], single: list[bool], refined: bool) -> dict:
    metrics = run_metrics(trajectories)
    row = {"label": label, "run_id": run_id, "n": len(trajectories), "refinement_steps": refined,
           "step0": _accs([t.step0_iou for t in trajectories])}
    if not refined:
        return row
    finals = [t.final_iou for t in trajectories]
    best = max(LABEL_FREE_POLICIES, key=lambda p: (metrics["policies"][p]["acc@0.5"], p == "fixed"))
    best_ious, _ = policy_ious(trajectories, best)
    row.update({
        "final": _accs(finals),
        "best_rule": {"rule": best, **_accs(best_ious)},
        "oracle": {"label": ORACLE_LABEL, **_accs([t.oracle_iou for t in trajectories])},
        "per_step": step_rates(trajectories),
        "degradation": metrics["degradation"],
        "unreadable": metrics["parse_failure_rate"],
        "vs_single_shot": {"final": _paired(single, [v >= TAU for v in finals]),
                           "best_rule": _paired(single, [v >= TAU for v in best_ious])},
    })
    return row


def self_selected(boxes: Sequence) -> int:
    """The index of the candidate box that agrees most with the others (largest summed IoU; a missing box agrees
    with none; ties go to the earliest, the greedy answer)."""
    def agreement(i: int) -> float:
        return sum(iou(boxes[i], other) for j, other in enumerate(boxes) if j != i)

    return max(range(len(boxes)), key=lambda i: (agreement(i), -i))


def _best_of_row(label: str, candidates: list[list[Trajectory]], single: list[bool]) -> dict:
    chosen, best = [], []
    for per_sample in zip(*candidates, strict=True):
        steps = [t.steps[0] for t in per_sample]
        chosen.append(steps[self_selected([s.box for s in steps])].iou)
        best.append(max(s.iou for s in steps))
    return {"label": label, "run_id": None, "n": len(chosen), "refinement_steps": False, "best_of": len(candidates),
            "step0": _accs([t.step0_iou for t in candidates[0]]), "final": _accs(chosen),
            "oracle": {"label": ORACLE_LABEL, **_accs(best)},
            "vs_single_shot": {"final": _paired(single, [v >= TAU for v in chosen])}}


def sampled_single_shot(run: dict) -> bool:
    """Whether a stored run is a sampled single shot (a best-of-K candidate): T=0, answers sampled."""
    return run["steps"] == 0 and bool((run["config"] or {}).get("sampling", {}).get("do_sample"))


def sampled_runs_of_base(db: Database, run_ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """Split a selection (the baseline first) into the table's runs (base first) and the best-of candidates:
    sampled single-shot runs of the base run's model (what the app's Compare tab passes). A sampled run is never
    the base: if the baseline is one and a greedy run of its model is selected, that run is the base."""
    if not run_ids:
        return [], []
    runs = {rid: get_run(db, rid) for rid in run_ids}

    def sampled(rid: int) -> bool:
        return sampled_single_shot(runs[rid])

    base = run_ids[0]
    if sampled(base):
        base = next((rid for rid in run_ids if not sampled(rid) and runs[rid]["model_id"] == runs[base]["model_id"]),
                    base)
    candidates = [rid for rid in run_ids if rid != base and sampled(rid)
                  and runs[rid]["model_id"] == runs[base]["model_id"]]
    return [base, *[rid for rid in run_ids if rid != base and rid not in candidates]], candidates


def paper_table(db: Database, run_ids: Sequence[int], labels: Sequence[str] | None = None,
                best_of: Sequence[int] = ()) -> dict:
    """The table for ``run_ids`` (the base model's run first), with a best-of-K row when ``best_of`` gives the
    base model's sampled single-shot runs. Raises InvalidInputError for no runs, unknown or empty runs, runs
    that share no samples, a label count that does not match, or a best-of run that is not a sampled single
    shot of the base model."""
    if not run_ids:
        raise InvalidInputError("give the run ids: the base model's run first, then each trained model's")
    if labels and len(labels) != len(run_ids):
        raise InvalidInputError(f"{len(labels)} labels for {len(run_ids)} runs; give one label per run")
    for rid in best_of:
        run, base_run = get_run(db, rid), get_run(db, run_ids[0])
        if not sampled_single_shot(run):
            raise InvalidInputError(f"best-of run {rid} must be a sampled single shot (`ivt eval --steps 0 "
                                    "--temperature 0.7 --seed N`)")
        if run["model_id"] != base_run["model_id"]:
            raise InvalidInputError(f"best-of run {rid} is another model's than base run {run_ids[0]}'s")
    trajs = {}
    for rid in [*run_ids, *best_of]:
        loaded = load_trajectories(db, rid)
        if not loaded:
            raise InvalidInputError(f"run {rid} has no trajectories yet")
        trajs[rid] = {t.sample_id: t for t in loaded}
    common = sorted(set.intersection(*(set(t) for t in trajs.values())))
    if not common:
        raise InvalidInputError(f"runs {', '.join(map(str, run_ids))} share no samples; use runs of one split")
    runs = {rid: get_run(db, rid) for rid in run_ids}
    base = run_ids[0]
    base_trajs = [trajs[base][s] for s in common]
    single = [t.step0_iou >= TAU for t in base_trajs]
    names = list(labels) if labels else [get_model(db, runs[rid]["model_id"])["name"] for rid in run_ids]
    rows = [_row("base single shot" if not labels else f"{names[0]} single shot", base, base_trajs, single, False)]
    for index, rid in enumerate(run_ids):
        refined = runs[rid]["steps"] > 0
        if not refined and index == 0:
            continue
        label = (("naive IVT" if not labels else f"{names[0]} + IVT") if index == 0
                 else f"{names[index]} + IVT" if refined else f"{names[index]} single shot")
        if run_verdict(runs[rid]) == "derived":
            label += ", derived verdict"
        rows.append(_row(label, rid, [trajs[rid][s] for s in common], single, refined))
        if index:  # a trained model: how well it judges the base's own step-0 boxes, where `ivt verifier` measured it
            from ivt_core.verifier import stored_verdict  # (torch comes with it: imported only when needed)

            rows[-1]["verifier"] = stored_verdict(get_model(db, runs[rid]["model_id"]), base)
    if best_of:
        k = len(best_of) + 1
        rows.insert(1, _best_of_row(f"best-of-{k} self-selected", [base_trajs, *[[trajs[rid][s] for s in common]
                                                                                  for rid in best_of]], single))
    notes = ([f"best-of-{len(best_of) + 1}: the base model's greedy answer and {len(best_of)} sampled ones, the "
              "one agreeing most with the others taken (label-free; the compute of a "
              f"{len(best_of)}-step loop); its oracle column: the best candidate by ground truth"] if best_of else [])
    return {"samples": len(common), "dataset": runs[base]["dataset"], "split": runs[base]["split"],
            "tau": TAU, "rows": rows,
            "notes": ["best rule: the label-free stopping rule most accurate at IoU 0.5, chosen on this split "
                      "(an optimistic pick; fix the rule on another split to deploy it)",
                      f"{ORACLE_LABEL}: the best step by ground truth, an upper bound no deployed loop reaches",
                      "wins / losses / p: paired right-or-wrong at IoU 0.5 against base single shot, exact McNemar",
                      f"verifier AUROC: how well the model tells the base run's right step-0 boxes from its wrong "
                      f"ones (`ivt verifier {base} --model ...`; 0.5: not at all)",
                      "changed answers: a step gains only when enough of the boxes it changes were wrong; 'changing "
                      "gains above' is that share, from the step's own fix and break rates among them",
                      *notes]}


def verifier_cell(row: dict) -> str:
    """A trained row's verifier AUROC as shown: each measured one ("after its reasoning" when read there: ``ivt
    verifier --reasoning-first``), "n/a" (the base's boxes are all right or all wrong) or "not measured"."""
    measured = row.get("verifier")
    if not measured:
        return "not measured"
    return ", ".join("n/a" if m.get("auroc") is None else
                     f"{m['auroc']:.3f}" + (" (after its reasoning)" if m.get("reasoning_first") else "")
                     for m in measured)


def table_text(table: dict) -> str:
    """The table as fixed-width text (what ``ivt paper-table`` prints)."""
    cols = [("step0", "step 0"), ("final", "final"), ("best_rule", "best rule"), ("oracle", "oracle*")]
    width = max(26, *(len(row["label"]) + 2 for row in table["rows"]))
    head = f"{'':<{width}}" + "".join(f"{name:>15}" for _, name in cols) + f"{'final vs single shot':>32}"
    lines = [f"{table['dataset']}/{table['split']}, {table['samples']} common samples; Acc at IoU 0.5 / 0.7 / 0.9",
             head]
    def cell(d: dict | None) -> str:
        return "-" if d is None else "/".join(f"{d[f'acc@{t:g}']:.3f}"[1:] for t in TABLE_THRESHOLDS)

    for row in table["rows"]:
        line = f"{row['label']:<{width}}" + "".join(f"{cell(row.get(k)):>15}" for k, _ in cols)
        if "vs_single_shot" in row:
            vs = row["vs_single_shot"]["final"]
            tested = f"{vs['wins']} wins, {vs['losses']} losses, p={vs['p']:.2g}"
            line += f"{tested:>32}"
        lines.append(line.rstrip())
    lines.append("")
    for row in table["rows"]:
        if not row["refinement_steps"]:
            continue
        best = row["best_rule"]
        vs = row["vs_single_shot"]["best_rule"]
        verifier = f"; verifier AUROC {verifier_cell(row)}" if "verifier" in row else ""
        lines.append(f"{row['label']}: best rule '{best['rule']}' ({vs['wins']} wins, {vs['losses']} losses, "
                     f"p={vs['p']:.2g}); unreadable answers {row['unreadable']:.1%}{verifier}")
        for s in row["per_step"]:
            lines.append(f"  step {s['step']}: degradation {s['degradation']:.3f}, fixed {s['fix']:.1%}, "
                         f"broken {s['break']:.1%} ({s['n']} samples); {changes_text(s)}")
    lines += ["", *[f"* {note}" if note.startswith("oracle") else f"- {note}" for note in table["notes"]]]
    return "\n".join(lines)
