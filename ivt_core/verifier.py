"""Can a model tell a base model's right boxes from its wrong ones? The verifier test of a refinement model.

The loop can only improve on single shot if, shown a box, the model keeps the right ones and changes the wrong
ones. Here the boxes are a base run's own step-0 answers (its real mistakes, not drawn counterfactuals): each
is drawn on its image as in the run, the refine prompt asked, and the model's probability of answering with the
keep verdict ("The box is correct.", the phrase the refine prompts ask for) is read from one forward pass, no
generation. Over the run's samples:

- ``auroc``: the probability that a right box (IoU >= ``threshold`` with the ground truth) gets a higher
  P(keep) than a wrong one (ties count half). 0.5: the model cannot tell them apart, so no stopping rule built
  on its verdict can beat single shot; 1.0: a perfect verifier.
- ``p_keep_right`` / ``p_keep_wrong``: the mean P(keep) on right and on wrong boxes; ``keeps_right`` /
  ``keeps_wrong``: the share where P(keep) > 0.5.

A model that reasons before its verdict ("It is on the small blue circle. Wrong colour.", the prose teacher's
"Checking the edges: ... The box is correct.") would almost never *start* with the keep verdict, so P(keep) read
at the start of its answer says nothing. With ``reasoning_first`` the model first answers greedily; its reasoning
(the text before its box, ``parse_answer``) less its last sentence, the verdict, is kept, and P(keep) is read
after it: P("The box is correct." | the conversation and its own reasoning), from two forward passes (the
reasoning with and without the verdict after it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from statistics import fmean

import torch

from ivt_core.data.sample import Sample
from ivt_core.error_kinds import wrong_box_kind
from ivt_core.errors import InvalidInputError
from ivt_core.grounders.base import assistant_message
from ivt_core.parse import parse_answer
from ivt_core.prompts import get_prompts
from ivt_core.render import RenderStyle, render_box
from ivt_core.supervision import build_example, collate
from ivt_core.teachers.geometric import KEEP_MINIMAL as KEEP_VERDICT

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
REASONING_TOKENS = 160  # the longest reasoning read before the verdict (``reasoning_first``)


def reasoning_before_verdict(answer: str) -> str:
    """The reasoning a refinement answer gives before its verdict: the text before its box less its last sentence
    ("It is on the small blue circle. Wrong colour. {box}" -> "It is on the small blue circle."; "" when the
    answer is the verdict alone)."""
    sentences = [p for p in _SENTENCE_END.split(parse_answer(answer).reasoning.strip()) if p]
    return " ".join(sentences[:-1])


def first_refinement(prompts, expression: str, image, answer: str, box, style: RenderStyle) -> list[dict]:
    """The loop's conversation at its first refinement, before the model answers: the grounding question,
    ``answer`` (the step-0 text) and ``box`` drawn on the image with the refine prompt."""
    return [
        {"role": "user", "content": [{"type": "image", "image": image},
                                     {"type": "text", "text": prompts.ground_text(expression)}]},
        assistant_message(answer),
        {"role": "user", "content": [{"type": "image", "image": render_box(image, box, style)},
                                     {"type": "text", "text": prompts.refine_text(expression)}]},
    ]


def keep_logprobs(grounder, conversations: list[list[dict]], reasonings: Sequence[str]) -> list[float]:
    """log P("The box is correct." | conversation, reasoning) for each conversation: the verdict read after the
    reasoning given ("" : at the start of the answer), as log P(reasoning, keep) - log P(reasoning)."""
    logps = verdict_logprobs(grounder, [c + [assistant_message(f"{r} {KEEP_VERDICT}" if r else KEEP_VERDICT)]
                                        for c, r in zip(conversations, reasonings, strict=True)])
    given = [i for i, r in enumerate(reasonings) if r]
    if given:
        for i, logp in zip(given, verdict_logprobs(grounder, [conversations[i] + [assistant_message(reasonings[i])]
                                                              for i in given]), strict=True):
            logps[i] -= logp
    return logps


def keep_probability_rows(grounder, samples: Sequence[Sample], images: Sequence, answers: dict[str, dict],
                          style: RenderStyle, prompt_version: str, batch_size: int = 8,
                          progress: Callable[[int], None] | None = None,
                          reasoning_first: bool = False) -> list[dict]:
    """One row per sample: the base's step-0 box and IoU, and the model's P(keep) for it. ``answers`` maps a
    sample id to the base's step 0 (``raw_text``, ``box``, ``iou``); samples whose step 0 had no box are
    skipped (nothing was drawn). ``reasoning_first``: P(keep) after the model's own reasoning (module doc); the
    rows then also hold that ``reasoning``."""
    from ivt_core.grounders.base import Sampling

    prompts = get_prompts(grounder.family.prompt_family, prompt_version)
    items = [(s, im, answers[s.id]) for s, im in zip(samples, images, strict=True)
             if s.id in answers and answers[s.id]["box"] is not None]
    rows = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        conversations = [first_refinement(prompts, sample.expression, image, step0["raw_text"], step0["box"], style)
                         for sample, image, step0 in chunk]
        reasonings = [""] * len(chunk)
        if reasoning_first:
            generated = grounder.predict(conversations, Sampling(max_new_tokens=REASONING_TOKENS))
            reasonings = [reasoning_before_verdict(g.text) for g in generated]
        logps = keep_logprobs(grounder, conversations, reasonings)
        for (sample, _, step0), logp, reasoning in zip(chunk, logps, reasonings, strict=True):
            row = {"sample_id": sample.id, "iou": step0["iou"], "p_keep": min(1.0, math.exp(logp))}
            rows.append({**row, "reasoning": reasoning} if reasoning_first else row)
        if progress:
            progress(len(chunk))
    return rows


@torch.inference_mode()
def verdict_logprobs(grounder, conversations: list[list[dict]]) -> list[float]:
    """log P(last assistant message's text | the rest) for each conversation: the text's tokens only (not the
    end of turn: a model may go on after the verdict, e.g. with the box it keeps)."""
    from ivt_core.grounders.engine import _inner_model

    processor, model = grounder.processor, grounder.model
    end_of_turn = processor.tokenizer.eos_token_id
    examples = []
    for conversation in conversations:
        example = build_example(processor, conversation)
        labels = example["labels"]
        span = (labels != -100).nonzero()[:, 0]
        ends = [int(i) for i in span if int(example["input_ids"][i]) == end_of_turn]
        if ends:
            labels[ends[0]:] = -100
        examples.append(example)
    batch = collate(examples, processor.tokenizer.pad_token_id or 0)
    labels = batch.pop("labels")
    inputs = {k: v.to(grounder.device) for k, v in batch.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    hidden = _inner_model(model)(**inputs).last_hidden_state
    out = []
    for row in range(len(conversations)):
        targets = (labels[row, 1:] != -100).nonzero()[:, 0]  # position p predicts token p + 1
        logits = model.get_output_embeddings()(hidden[row, targets.to(hidden.device)]).float()
        tokens = labels[row, targets + 1].to(logits.device)
        out.append(float(torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).sum()))
    return out


def judge_run(workspace, db, grounder, run_id: int, threshold: float = 0.5, limit: int | None = None,
              batch_size: int = 8, progress: Callable[[int], None] | None = None,
              reasoning_first: bool = False) -> tuple[dict, list[dict]]:
    """The verifier test of ``grounder`` on run ``run_id``'s step-0 boxes (the first ``limit`` samples by id):
    (summary, rows). Raises IVTError subclasses saying what to fix (unknown or empty run, missing images)."""
    from ivt_core.data.sample import load_image
    from ivt_core.evaluate import check_images
    from ivt_core.store.runs import get_run, load_trajectories
    from ivt_core.store.samples import get_sample

    if not 0.0 < threshold <= 1.0:
        raise InvalidInputError(f"the IoU threshold must be in (0, 1], got {threshold}")
    run = get_run(db, run_id)
    answers = {t.sample_id: {"raw_text": t.steps[0].raw_text, "box": t.steps[0].box, "iou": t.steps[0].iou}
               for t in load_trajectories(db, run_id) if t.steps}
    if not answers:
        raise InvalidInputError(f"run {run_id} has no trajectories to take step-0 boxes from")
    samples = [get_sample(db, sample_id) for sample_id in sorted(answers)][:limit]
    check_images(workspace, samples)
    images = [load_image(workspace.resolve(s.image_path)) for s in samples]
    rows = keep_probability_rows(grounder, samples, images, answers, RenderStyle.from_dict(run["render_style"]),
                                 run["prompt_version"], batch_size, progress, reasoning_first)
    by_id = {s.id: s for s in samples}
    for row in rows:  # what each box is (the wrong ones: what a verifier must see to reject it)
        sample = by_id[row["sample_id"]]
        row["kind"] = wrong_box_kind(answers[sample.id]["box"], sample.bbox, sample.meta, threshold)
    summary = {**summarize(rows, threshold), "run_id": run_id, "model": grounder.name,
               "reasoning_first": reasoning_first}
    return summary, rows


def _verdict_key(run_id: int, reasoning_first: bool) -> str:
    return f"verifier_run{run_id}" + ("_after_reasoning" if reasoning_first else "")


def store_verdict(db, model_id: int, summary: dict) -> None:
    """Keep a verifier test's summary with the judging model (read back by ``stored_verdict``), one per place
    P(keep) was read: a test read after the model's reasoning does not replace one read at the answer's start."""
    from ivt_core.store.models import set_model_meta

    set_model_meta(db, model_id, _verdict_key(summary["run_id"], bool(summary.get("reasoning_first"))), summary)


def stored_verdict(model: dict, run_id: int) -> list[dict]:
    """The summaries of ``model``'s (a registry row) verifier tests on run ``run_id``'s boxes: read at the start
    of the answer, then after its reasoning; those that were run."""
    return [model["meta"][key] for key in (_verdict_key(run_id, False), _verdict_key(run_id, True))
            if key in model["meta"]]


def summary_text(s: dict) -> str:
    """The verifier test's summary in three lines, and a fourth by kind of wrong box when the run has them."""
    def fmt(value, percent=False):
        return "-" if value is None else (f"{value:.0%}" if percent else f"{value:.3f}")

    return "\n".join([
        f"{s['model']} judging run {s['run_id']}'s step-0 boxes: {s['n']} boxes, {s['right']} right and "
        f"{s['wrong']} wrong at IoU {s['threshold']}",
        f"AUROC of P(\"The box is correct.\"{' | its own reasoning' if s.get('reasoning_first') else ''}) "
        f"right vs wrong: {fmt(s['auroc'])} "
        + ("(0.5: cannot tell them apart)" if s["auroc"] is not None else
           "(needs both right and wrong boxes; pick a run that has both)"),
        f"mean P(keep): right boxes {fmt(s['p_keep_right'])}, wrong boxes {fmt(s['p_keep_wrong'])}; "
        f"P(keep) > 0.5 on {fmt(s['keeps_right'], True)} of right and {fmt(s['keeps_wrong'], True)} of wrong boxes",
        *([("AUROC right vs each kind of wrong box: " + ", ".join(
            f"{kind} {fmt(v['auroc'])} ({v['n']})" for kind, v in s["by_kind"].items()))] if s.get("by_kind") else [])])


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties half (the Mann-Whitney statistic); None if a class is empty."""
    if not positives or not negatives:
        return None
    ranked = sorted([(v, 1) for v in positives] + [(v, 0) for v in negatives])
    rank_sum, index = 0.0, 0
    while index < len(ranked):
        end = index
        while end < len(ranked) and ranked[end][0] == ranked[index][0]:
            end += 1
        mean_rank = (index + 1 + end) / 2  # 1-based ranks, ties share their mean
        rank_sum += mean_rank * sum(label for _, label in ranked[index:end])
        index = end
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def summarize(rows: Sequence[dict], threshold: float = 0.5) -> dict:
    """AUROC and keep rates of ``keep_probability_rows`` with right = IoU >= ``threshold``; with each row's
    ``kind`` (``error_kinds.wrong_box_kind``), the AUROC of the right boxes against each kind of wrong one."""
    if not rows:
        raise InvalidInputError("no step-0 box to judge: the run has no readable step-0 answers")
    right = [r["p_keep"] for r in rows if r["iou"] >= threshold]
    wrong = [r["p_keep"] for r in rows if r["iou"] < threshold]

    def share(values):
        return sum(v > 0.5 for v in values) / len(values) if values else None

    by_kind: dict[str, list[float]] = {}
    for r in rows:
        if r["iou"] < threshold and "kind" in r:
            by_kind.setdefault(r["kind"], []).append(r["p_keep"])
    return {"threshold": threshold, "n": len(rows), "right": len(right), "wrong": len(wrong),
            "auroc": auroc(right, wrong), "p_keep_right": fmean(right) if right else None,
            "p_keep_wrong": fmean(wrong) if wrong else None, "keeps_right": share(right), "keeps_wrong": share(wrong),
            "by_kind": {kind: {"n": len(values), "auroc": auroc(right, values)}
                        for kind, values in sorted(by_kind.items(), key=lambda kv: -len(kv[1]))}}
