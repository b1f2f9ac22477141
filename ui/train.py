"""Train: an SFT or GRPO form with the knobs that matter, the exact command, start / stop / resume, and live
curves, log tail and the jobs list polled from the store (a reloaded page finds a running job again)."""

from __future__ import annotations

import json
import shlex
from datetime import datetime

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ivt_core import jobs
from ivt_core.config import job_config_class
from ivt_core.config.evaluation import EvalConfig
from ivt_core.config.settings import stored
from ivt_core.config.training import GRPOConfig, SFTConfig
from ivt_core.errors import IVTError
from ivt_core.rollouts import rollout_steps, rollout_views
from ivt_core.store.jobs import ACTIVE, get_job, job_metric_times, job_metrics, list_jobs
from ivt_core.store.models import get_model, model_of_jobs
from ivt_core.store.runs import list_runs
from ivt_core.store.traces import count_traces
from ui.choices import model_choices, parse_split_choice, split_choices
from ui.config_form import config_fields, config_from_form
from ui.context import AppContext
from ui.explore import queue_evaluation

POLL_S = 2.0
PANELS = (("loss", ("loss", "eval_loss")), ("reward", ("reward_mean", "reward_std")), ("KL", ("kl",)),
          ("IoU by step", ("iou_step",)), ("degradation", ("degradation",)))


def training_split(splits: list[str]) -> str | None:
    """The split GRPO draws prompts from by default: a train split, else a val split; a test split never (the
    numbers reported on it would no longer be held out), unless it is all there is."""
    for suffix in ("/train", "/val"):
        found = next((s for s in splits if s.endswith(suffix)), None)
        if found:
            return found
    return next((s for s in splits if not s.endswith("/test")), splits[0] if splits else None)


def job_choices(ctx: AppContext) -> list[tuple[str, int]]:
    """Labels without the status: a dropdown's labels are not refreshed by the timer, the status line is."""
    return [(f"job {j['id']}: {j['kind']}, {str(j['created_at'])[:16].replace('T', ' ')}", j["id"])
            for j in list_jobs(ctx.db(), limit=100)]


def default_job(ctx: AppContext) -> int | None:
    """The job to show when a page opens: the newest running trainer, else the newest trainer, else any."""
    rows = list_jobs(ctx.db(), limit=100)
    for wanted in (lambda j: j["kind"] in jobs.TRAINERS and j["status"] in ACTIVE,
                   lambda j: j["kind"] in jobs.TRAINERS, lambda j: True):
        found = next((j["id"] for j in rows if wanted(j)), None)
        if found is not None:
            return found
    return None


def jobs_frame(ctx: AppContext) -> pd.DataFrame:
    rows = [{"job": j["id"], "kind": j["kind"], "status": j["status"],
             "progress": f"{j['progress_done']}/{j['progress_total']}" if j["progress_total"] else "",
             "message": j["message"] or j["error"] or "",
             "started": (j["started_at"] or j["created_at"])[5:16].replace("T", " "), "took": took(j)}
            for j in list_jobs(ctx.db(), limit=30)]
    return pd.DataFrame(rows or [{"job": "(no jobs yet)"}])


def took(job: dict) -> str:
    """How long a finished job ran ("2 min 5 s"), or "" while it runs."""
    if not job["started_at"] or not job["finished_at"]:
        return ""
    seconds = int((datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"]))
                  .total_seconds())
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def compare_with_parent(ctx: AppContext, job_id: int | None) -> str:
    """Put the trained model next to its parent: if the parent has no finished run on the split and T of the
    model's newest run, queue one with the same settings; either way, say which two runs Compare should show."""
    if not job_id:
        return "Pick a training job."
    model = model_of_jobs(ctx.db(), jobs.whole_chain(ctx.db(), int(job_id)))
    if model is None or not model["parent_id"]:
        return "This job has not registered a model with a parent (yet)."
    runs = [r for r in list_runs(ctx.db()) if r["status"] == "done"]
    mine = next((r for r in runs if r["model_id"] == model["id"]), None)
    if mine is None:
        return "Evaluate the trained model first (the button beside this one); then compare it with its parent."
    parent = get_model(ctx.db(), model["parent_id"])
    theirs = next((r for r in runs if r["model_id"] == parent["id"] and (r["dataset"], r["split"], r["steps"]) ==
                   (mine["dataset"], mine["split"], mine["steps"])), None)
    if theirs is not None:
        return (f"In Compare, pick runs {theirs['id']} ({parent['name']}, as the baseline) and {mine['id']} "
                f"({model['name']}): {mine['dataset']}/{mine['split']}, T={mine['steps']}.")
    settings = mine["config"]
    config = EvalConfig.for_model(parent, dataset=mine["dataset"], split=mine["split"], steps=mine["steps"],
                                  stop=mine["policy"], limit=settings.get("limit"))
    return (queue_evaluation(ctx, config) + f" When it is done, Compare opens on it and run {mine['id']} "
            f"({model['name']}) if they are the newest two.")


def smoothed(values: list[float], weight: float) -> list[float]:
    """An exponential moving average (TensorBoard's smoothing): ``weight`` 0 leaves the values as they are."""
    out, last = [], None
    for value in values:
        last = value if last is None else weight * last + (1 - weight) * value
        out.append(last)
    return out


def curves(ctx: AppContext, job_id: int | None, smoothing: float = 0.0, log_scale: bool = False,
           by_time: bool = False) -> go.Figure | None:
    """The job's curves, continuous across resumes (every job of its resume chain, later ones winning a step);
    ``smoothing``: EMA weight (the raw points stay, faint); ``log_scale``: the loss and KL axes logarithmic."""
    if not job_id:
        return None
    series: dict[str, dict[int, float]] = {}
    times: dict[int, str] = {}
    for member in jobs.whole_chain(ctx.db(), int(job_id)):
        for name, points in job_metrics(ctx.db(), member).items():
            series.setdefault(name, {}).update(dict(points))
        times.update(job_metric_times(ctx.db(), member))
    series = {name: sorted(points.items()) for name, points in series.items()}
    if by_time and times:  # minutes since the first point (of the whole resume chain)
        start = min(datetime.fromisoformat(t) for t in times.values())
        minutes = {s: (datetime.fromisoformat(t) - start).total_seconds() / 60 for s, t in times.items()}
        series = {name: [(minutes[s], v) for s, v in points if s in minutes] for name, points in series.items()}
    panels = [(title, [(n, s) for n, s in series.items() if any(n.startswith(p) for p in prefixes)])
              for title, prefixes in PANELS]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for t, _ in panels])
    for col, (title, lines) in enumerate(panels, start=1):
        for name, points in lines:
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            if smoothing:
                fig.add_trace(go.Scatter(x=xs, y=ys, name=f"{name} (raw)", opacity=0.25, showlegend=False,
                                         mode="lines"), row=1, col=col)
                ys = smoothed(ys, smoothing)
            fig.add_trace(go.Scatter(x=xs, y=ys, name=name, mode="lines+markers" if len(points) < 40 else "lines"),
                          row=1, col=col)
        if log_scale and title in ("loss", "KL"):
            fig.update_yaxes(type="log", row=1, col=col)
    fig.update_layout(height=320, margin={"t": 40, "b": 30}, legend={"orientation": "h"})
    fig.update_xaxes(title_text="minutes" if by_time else "step")
    return fig


def job_status(ctx: AppContext, job_id: int | None) -> str:
    if not job_id:
        return "No job selected."
    job = get_job(ctx.db(), int(job_id))
    progress = f" · {job['progress_done']}/{job['progress_total']}" if job["progress_total"] else ""
    extra = f" · {job['message']}" if job["message"] else ""
    error = f"\n\n**Error:** {job['error']}" if job["error"] else ""
    chain = jobs.whole_chain(ctx.db(), job["id"])
    resumed = f" · resumed as {', '.join(f'job {j}' for j in chain[chain.index(job['id']) + 1:])}" if (
        chain[-1] != job["id"]) else ""
    command = f"\n\n`{' '.join(jobs.COMMANDS[job['kind']] + job['argv'])}`" if job["kind"] in jobs.COMMANDS else ""
    model = model_of_jobs(ctx.db(), chain) if job["kind"] in jobs.TRAINERS else None
    registered = ""
    if model is not None:
        parent = get_model(ctx.db(), model["parent_id"])["name"] if model["parent_id"] else "none"
        registered = (f"\n\n**Registered model {model['id']}: {model['name']}** · base `{model['base_path']}`"
                      + (f" · adapter `{model['adapter_path']}`" if model["adapter_path"] else "")
                      + f" · parent: {parent}. Evaluate it below, or pick it in Explore; its card (how it was "
                        "made, the command that trains it again, its runs) is on the Overview tab.")
    return (f"**Job {job['id']}** ({job['kind']}) · **{job['status']}**{progress}{extra}{resumed}{error}{command}"
            f"{registered}")


def stoppable(ctx: AppContext, job_id) -> bool:
    """Whether the job can still be stopped (queued or running): the Stop button is shown only then."""
    return bool(job_id) and get_job(ctx.db(), int(job_id))["status"] in ACTIVE


def resumable(ctx: AppContext, job_id) -> bool:
    """Whether Resume can continue the job (``jobs.resume_refusal``): the Resume button is shown only then."""
    return bool(job_id) and jobs.resume_refusal(ctx.db(), int(job_id)) is None


def chain_log(ctx: AppContext, job_id: int | None, lines: int = 30) -> str:
    """The log tail of a job and of the jobs that resumed it, one after the other (one run, one log)."""
    if not job_id:
        return ""
    chain = jobs.whole_chain(ctx.db(), int(job_id))
    if len(chain) == 1:
        return jobs.log_tail(get_job(ctx.db(), chain[0]), lines)
    parts = [f"--- job {member} ---\n" + jobs.log_tail(get_job(ctx.db(), member), lines // len(chain) + 5)
             for member in chain]
    return "\n".join(parts)


def evaluate_trained(ctx: AppContext, job_id: int | None) -> str:
    """Queue an evaluation of the model a training job registered: a val split (else any but train), T=2."""
    if not job_id:
        return "Pick a training job."
    model = model_of_jobs(ctx.db(), jobs.whole_chain(ctx.db(), int(job_id)))
    if model is None:
        return "This job has not registered a model (yet): evaluation is for finished training jobs."
    splits = split_choices(ctx)
    held_out = next((s for s in splits if s.endswith("/val")), None) or next(
        (s for s in splits if not s.endswith("/train")), None)
    if held_out is None:
        return "No held-out split to evaluate on: generate or import a val split in the Data tab."
    dataset, split = parse_split_choice(held_out)
    return queue_evaluation(ctx, EvalConfig.for_model(model, dataset=dataset, split=split, steps=2, limit=100))


def build(ctx: AppContext) -> list:
    models = model_choices(ctx)
    splits = split_choices(ctx)
    with gr.Row():
        with gr.Column(scale=1):
            kind = gr.Radio([("SFT on approved traces", "sft"), ("GRPO through the loop", "grpo")], value="sft",
                            label="Training")
            model = gr.Dropdown(models, value=models[0][1] if models else None,
                                label="Start from model (GRPO continues an adapter)")
            traces_note = gr.Markdown()
            # one group of settings per trainer, each with its own defaults and limits (ivt_core.config.training)
            with gr.Group(visible=True) as sft_group:
                sft_settings = config_fields(SFTConfig)
            with gr.Group(visible=False) as grpo_group:
                prompts_split = gr.Dropdown(splits, value=training_split(splits), label="GRPO prompts from",
                                            info="a train split: the numbers reported on val and test stay held out")
                grpo_settings = config_fields(GRPOConfig)
            command = gr.Code(label="The exact command the job will run, and its settings", language="shell",
                              interactive=False, elem_id="train-command")
            with gr.Row():
                start = gr.Button("Start training", variant="primary", elem_id="train-start")
            form_note = gr.Markdown(elem_id="train-message")
        with gr.Column(scale=1):
            job = gr.Dropdown(job_choices(ctx), label="Job", elem_id="train-job")
            status = gr.Markdown(elem_id="train-status")
            with gr.Row():
                stop = gr.Button("Stop (saves a checkpoint)", variant="stop", elem_id="train-stop", visible=False)
                resume = gr.Button("Resume", elem_id="train-resume", visible=False)
                evaluate = gr.Button("Evaluate the trained model", elem_id="train-evaluate")
                with_parent = gr.Button("Compare with its parent", elem_id="train-compare-parent")
            action_note = gr.Markdown()
            with gr.Row():
                smoothing = gr.Slider(0, 0.99, value=0.0, step=0.01, label="Smoothing (EMA)")
                log_scale = gr.Checkbox(label="Log scale (loss, KL)")
                by_time = gr.Checkbox(label="Against time")
            plot = gr.Plot(label="Live curves")
            with gr.Accordion("GRPO rollouts: a step's group of sampled trajectories", open=False):
                rollout_step = gr.Slider(1, 2, value=1, step=1, label="Step", elem_id="rollout-step")
                rollout_note = gr.Markdown(elem_id="rollout-note")
                rollout_gallery = gr.Gallery(columns=4, height=360, allow_preview=True, show_label=False)
            log = gr.Code(label="Log (last lines)", language=None, interactive=False, max_lines=16)
    table = gr.Dataframe(label="Jobs", interactive=False)
    timer = gr.Timer(POLL_S)

    form_inputs = [kind, model, prompts_split, *sft_settings.values(), *grpo_settings.values()]

    def form_config(knd, model_id, split, *values):
        """The trainer config the form describes (checked). Raises IVTError saying what to fix."""
        if knd not in jobs.TRAINERS:
            raise IVTError(f"training kind must be sft or grpo, not {knd!r}")
        if not model_id:
            raise IVTError("pick a model to start from")
        names = list(sft_settings) if knd == "sft" else list(grpo_settings)
        chosen = values[:len(sft_settings)] if knd == "sft" else values[len(sft_settings):]
        cls = job_config_class(knd)
        settings = config_from_form(cls, dict(zip(names, chosen, strict=True)))  # types, emptied fields
        values = {name: getattr(settings, name) for name in names}
        if knd == "grpo":
            values["dataset"], values["split"] = parse_split_choice(split or "shapes/train")
        return cls.for_model(get_model(ctx.db(), int(model_id)), **values)

    def preview(*values):
        approved = count_traces(ctx.db())["approved"]
        note = f"{approved:,} approved traces in the store (SFT trains on a snapshot of them)."
        knd = values[0]
        try:
            config = jobs.checked_config(ctx.workspace, knd, form_config(*values))
        except IVTError as exc:
            return f"# {exc}", note
        resolved = json.dumps({k: v for k, v in stored(config).items() if k not in ("workspace", "job_id")},
                              indent=1)
        return (f"{shlex.join(jobs.shown_command(knd, config))} --workspace {shlex.quote(str(ctx.workspace.root))}"
                f"\n\n# settings stored with the job:\n# " + resolved.replace("\n", "\n# ")), note

    def submit(*values):
        try:
            job_id, ahead = jobs.submit_in_turn(ctx.workspace, values[0], form_config(*values))
        except IVTError as exc:
            return f"**Not started:** {exc}", gr.update()
        note = (f"Job {job_id} queued: it starts when job {ahead} ends (one model job at a time)." if ahead
                else f"Started job {job_id}.")
        return note, gr.update(choices=job_choices(ctx), value=job_id)

    kind.change(lambda k: (gr.update(visible=k == "sft"), gr.update(visible=k == "grpo")), kind,
                [sft_group, grpo_group], show_progress="hidden")
    def poll(job_id, smooth=0.0, log_axes=False, timed=False):
        return (job_status(ctx, job_id), curves(ctx, job_id, smooth or 0.0, bool(log_axes), bool(timed)),
                chain_log(ctx, job_id), jobs_frame(ctx), gr.update(visible=stoppable(ctx, job_id)),
                gr.update(visible=resumable(ctx, job_id)))

    def do_stop(job_id):
        if not job_id:
            return "Pick a job."
        return f"Job {job_id}: {jobs.cancel(ctx.workspace, int(job_id))}."

    def do_resume(job_id):
        if not job_id:
            return "Pick a job.", gr.update()
        try:
            new = jobs.resume(ctx.workspace, int(job_id))
        except IVTError as exc:
            return f"**{exc}**", gr.update()
        return f"Resumed job {job_id} as job {new}.", gr.update(choices=job_choices(ctx), value=new)

    for component in form_inputs:
        component.change(preview, form_inputs, [command, traces_note], show_progress="hidden")
    start.click(submit, form_inputs, [form_note, job])
    poll_outputs = [status, plot, log, table, stop, resume]
    curve_controls = [job, smoothing, log_scale, by_time]
    job.change(poll, curve_controls, poll_outputs, show_progress="hidden")
    for control in (smoothing, log_scale, by_time):
        control.change(lambda j, s, lg, t: curves(ctx, j, s or 0.0, bool(lg), bool(t)), curve_controls, plot,
                       show_progress="hidden")

    def rollouts(job_id, at_step, latest=False):
        """The GRPO job's rollouts at a step (the newest with ``latest``): the slider's range, images, a line."""
        if not job_id or get_job(ctx.db(), int(job_id))["kind"] != "grpo":
            return gr.update(), [], "Rollouts are shown for GRPO jobs."
        steps = rollout_steps(jobs.job_config(ctx.workspace, get_job(ctx.db(), int(job_id))).out)
        if not steps:
            return gr.update(), [], "No rollouts yet (the first step writes them)."
        index = len(steps) - 1 if latest else min(max(int(at_step or 1), 1), len(steps)) - 1
        record = steps[index]
        rewards = [r["reward"] for r in record["rollouts"]]
        note = (f"Step {record['step']}: \"{record['expression']}\" ({record['sample_id']}), "
                f"{len(rewards)} rollouts, reward {min(rewards):.2f}..{max(rewards):.2f}. Red: each rollout's "
                "boxes (numbered by step, the last one in full); green: the ground truth.")
        return (gr.update(maximum=max(2, len(steps)), value=record["step"]), rollout_views(ctx.workspace, record),
                note)

    job.change(lambda j: rollouts(j, None, latest=True), job, [rollout_step, rollout_gallery, rollout_note],
               show_progress="hidden")
    rollout_step.release(lambda j, s: rollouts(j, s)[1:], [job, rollout_step], [rollout_gallery, rollout_note],
                         show_progress="hidden")

    def job_form(job_id):
        """The form as the selected training job was started: its kind and its stored settings (what to change
        for a next run starts from what this one did)."""
        keep = [gr.update()] * (2 + len(sft_settings) + len(grpo_settings))
        if not job_id:
            return keep
        row = get_job(ctx.db(), int(job_id))
        if row["kind"] not in jobs.TRAINERS:
            return keep
        config = jobs.job_config(ctx.workspace, row)
        fields = sft_settings if row["kind"] == "sft" else grpo_settings
        values = {name: gr.update(value=getattr(config, name)) for name in fields}
        split = f"{config.dataset}/{config.split}" if row["kind"] == "grpo" else None
        return (gr.update(value=row["kind"]), gr.update(value=split) if split else gr.update(),
                *[values.get(name, gr.update()) if row["kind"] == "sft" else gr.update() for name in sft_settings],
                *[values.get(name, gr.update()) if row["kind"] == "grpo" else gr.update() for name in grpo_settings])

    job.input(job_form, job, [kind, prompts_split, *sft_settings.values(), *grpo_settings.values()])
    timer.tick(poll, curve_controls, poll_outputs, show_progress="hidden")
    stop.click(do_stop, job, action_note)
    resume.click(do_resume, job, [action_note, job])
    evaluate.click(lambda j: evaluate_trained(ctx, j), job, action_note)
    with_parent.click(lambda j: compare_with_parent(ctx, j), job, action_note)

    def first_view(*values):
        """Models and jobs listed afresh at page load (a model trained since the app started can be picked)."""
        models_now = model_choices(ctx)
        ids = [value for _, value in models_now]
        current = values[1] if values[1] in ids else (ids[0] if ids else None)
        splits_now = split_choices(ctx)
        prompts = values[2] if values[2] in splits_now else training_split(splits_now)
        values = (values[0], current, prompts, *values[3:])
        chosen = default_job(ctx)
        return (gr.update(choices=models_now, value=current), gr.update(choices=splits_now, value=prompts),
                *preview(*values), gr.update(choices=job_choices(ctx), value=chosen), *poll(chosen),
                *rollouts(chosen, None, latest=True))

    return [(first_view, form_inputs, [model, prompts_split, command, traces_note, job, *poll_outputs,
                                       rollout_step, rollout_gallery, rollout_note])]
