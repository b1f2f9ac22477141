"""Exporting traces as multi-turn chat JSONL for SFT, and importing them back.

One line per trace (``style="trl"``, the default)::

    {"messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": <grounding prompt>}]},
        {"role": "assistant", "content": [{"type": "text", "text": <student's step-0 answer>}], "train": false},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": <refine prompt>}]},
        {"role": "assistant", "content": [{"type": "text", "text": <reasoning + box JSON>}], "train": true},
        ...],
     "images": [<original>, <student box drawn>, <step-1 box drawn>, ...],
     "ivt": {<everything needed to rebuild the trace exactly: ids, boxes in pixels, status, teacher, ...>}}

``messages`` + ``images`` is the conversational vision format TRL's SFTTrainer reads; ``train`` marks which
assistant turns carry the loss (the student's own step-0 answer is context). ``style="llamafactory"`` writes
the ShareGPT form LLaMA-Factory reads (string contents with ``<image>`` placeholders, same ``images``).
Image paths are absolute, or relative to the JSONL file when ``images_dir`` copies them beside it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ivt_core.boxes import Box, iou
from ivt_core.data.sample import Sample
from ivt_core.errors import InvalidInputError, NotFoundError
from ivt_core.limits import MAX_EXPRESSION_CHARS, MAX_REASONING_CHARS, check_box_values, check_text
from ivt_core.prompts import get_prompts
from ivt_core.store import write_transaction
from ivt_core.store.samples import get_dataset, get_sample, upsert_dataset, upsert_samples
from ivt_core.store.traces import STATUSES, has_trace, insert_trace, list_traces
from ivt_core.traces import answer_text, trace_images
from ivt_core.workspace import Workspace

STYLES = ("trl", "llamafactory")


def trace_record(workspace: Workspace, trace: dict, sample: Sample, images_dir: Path | None, out_dir: Path) -> dict:
    """The export line of one trace (TRL style)."""
    from ivt_core.families import FAMILIES

    family = FAMILIES.get(trace["family"])
    prompts = get_prompts(family.prompt_family if family else "generic")
    convention, resized = trace["meta"].get("convention", "norm1000"), trace["meta"].get("resized")
    size = (sample.width, sample.height)
    paths = trace_images(workspace, trace, sample)
    if images_dir is not None:
        images_dir.mkdir(parents=True, exist_ok=True)
        copied = []
        for path in paths:
            target = (images_dir / f"{trace['id']}-{len(copied)}{Path(path).suffix or '.png'}").resolve()
            shutil.copyfile(path, target)
            base = out_dir.resolve()
            copied.append(str(target.relative_to(base)) if target.is_relative_to(base) else str(target))
        paths = copied

    def user(text: str) -> dict:
        return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}

    messages = [user(prompts.ground_text(sample.expression)),
                {"role": "assistant", "content": [{"type": "text", "text": trace["student_text"]}], "train": False}]
    for step in trace["steps"]:
        messages.append(user(prompts.refine_text(sample.expression)))
        text = answer_text(step["reasoning"], Box(*step["box"]), convention, size, resized)
        messages.append({"role": "assistant", "content": [{"type": "text", "text": text}], "train": True})
    return {
        "messages": messages,
        "images": paths,
        "ivt": {
            "trace_id": trace["id"], "sample_id": sample.id, "dataset": sample.dataset, "split": sample.split,
            "expression": sample.expression, "image_size": [sample.width, sample.height],
            "ground_truth": sample.bbox.to_xyxy(), "teacher": trace["teacher"], "kind": trace["kind"],
            "status": trace["status"], "version": trace["version"], "family": trace["family"],
            "student_text": trace["student_text"], "student_box": trace["student_box"],
            "student_iou": trace["student_iou"], "steps": trace["steps"], "flags": trace["flags"],
            "meta": trace["meta"], "origin": trace["origin"],
        },
    }


def record_to_conversation(record: dict, base_dir: Path) -> tuple[list[dict], set[int]]:
    """An exported (TRL-style) line as a conversation with loaded images, and the indices of trained turns.

    This is what SFT consumes: ``supervision.build_example(processor, conversation, train_turns)``.
    """
    from ivt_core.data.sample import load_image

    images = iter(load_image(p if Path(p).is_absolute() else base_dir / p) for p in record["images"])
    conversation, train = [], set()
    for index, message in enumerate(record["messages"]):
        content = [{"type": "image", "image": next(images)} if part["type"] == "image" else dict(part)
                   for part in message["content"]]
        conversation.append({"role": message["role"], "content": content})
        if message.get("train"):
            train.add(index)
    return conversation, train


def to_llamafactory(record: dict) -> dict:
    messages = []
    for message in record["messages"]:
        text = "".join("<image>" if part["type"] == "image" else part["text"] for part in message["content"])
        messages.append({"role": message["role"], "content": text})
    return {"messages": messages, "images": record["images"], "ivt": record["ivt"]}


def export_traces(workspace: Workspace, out: str | Path, status: str = "approved", images_dir: str | None = None,
                  style: str = "trl", **filters) -> int:
    """Write matching traces to ``out`` (JSONL); returns how many. Raises InvalidInputError for a bad style."""
    if style not in STYLES:
        raise InvalidInputError(f"unknown export style {style!r}; use one of {', '.join(STYLES)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_folder = Path(images_dir) if images_dir else None
    db = workspace.connect()
    try:
        count = 0
        tmp = out.with_suffix(out.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            offset = 0
            while True:
                batch = list_traces(db, limit=200, offset=offset, status=status, **filters)
                if not batch:
                    break
                for trace in batch:
                    record = trace_record(workspace, trace, get_sample(db, trace["sample_id"]), image_folder,
                                          out.parent)
                    handle.write(json.dumps(record if style == "trl" else to_llamafactory(record)) + "\n")
                    count += 1
                offset += len(batch)
        tmp.replace(out)
        return count
    finally:
        db.close()


def check_record(meta: dict, images: object) -> None:
    """Refuse an exported trace whose fields could not have come from IVT Studio: raises InvalidInputError
    naming the field (an unknown status, a box that is not finite or lies outside the image, no steps...)."""
    if meta.get("status") not in STATUSES:
        raise InvalidInputError(f"status {meta.get('status')!r} is not one of {', '.join(STATUSES)}")
    if meta.get("kind") not in ("corrective", "keep"):
        raise InvalidInputError(f"kind {meta.get('kind')!r} is not corrective or keep")
    size = meta.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and 0 < v <= 100_000 for v in size)):
        raise InvalidInputError(f"image_size {size!r} is not two positive whole numbers")
    width, height = size
    if not (isinstance(images, list) and images and isinstance(images[0], str)):
        raise InvalidInputError("images is not a list of image paths")
    check_text(meta.get("expression"), "expression", MAX_EXPRESSION_CHARS)
    for key in ("sample_id", "teacher", "family"):
        check_text(meta.get(key), key, 500)
    check_box_values(meta["ground_truth"], width, height, "ground_truth")
    if meta["student_box"] is not None:
        check_box_values(meta["student_box"], width, height, "student_box")
    steps = meta["steps"]
    if not (isinstance(steps, list) and steps and all(isinstance(s, dict) for s in steps)):
        raise InvalidInputError("steps is not a non-empty list of steps")
    for index, step in enumerate(steps, start=1):
        check_text(step.get("reasoning"), f"reasoning of step {index}", MAX_REASONING_CHARS)
        check_box_values(step.get("box"), width, height, f"box of step {index}")
    if not isinstance(meta.get("student_iou"), (int, float)) or not 0 <= meta["student_iou"] <= 1:
        raise InvalidInputError(f"student_iou {meta.get('student_iou')!r} is not a number in 0..1")


def import_traces(workspace: Workspace, path: str | Path, reviewer: str = "import") -> dict:
    """Read an export back: missing samples are recreated (dataset ``imported-traces``); returns counts.

    Raises NotFoundError / InvalidInputError naming the file and line for unreadable input; writes nothing then.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"trace file not found: {path}")
    records = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path} is not a text file of JSON lines ({exc.reason} at byte {exc.start})") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            meta = record["ivt"]
            images = record["images"]
            _ = (meta["sample_id"], meta["steps"], meta["student_box"], meta["ground_truth"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"{path}: line {number} is not an IVT trace export ({exc})") from exc
        try:
            check_record(meta, images)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{path}: line {number}: {exc}") from None
        records.append((number, meta, images))
    db = workspace.connect()
    created = skipped = 0
    try:
        with write_transaction(db):
            for number, meta, images in records:
                sample_id = meta["sample_id"]
                try:
                    get_sample(db, sample_id)
                except NotFoundError:
                    image = Path(images[0])
                    image = image if image.is_absolute() else path.parent / image
                    if not image.is_file():
                        raise InvalidInputError(f"{path}: line {number}: image {image} not found") from None
                    if get_dataset(db, "imported-traces") is None:
                        upsert_dataset(db, "imported-traces", "traces", {"from": str(path)})
                    w, h = meta["image_size"]
                    upsert_samples(db, [Sample(sample_id, "imported-traces", meta.get("split", "train"),
                                               str(image.resolve()), w, h, meta["expression"],
                                               Box(*meta["ground_truth"]), meta.get("dataset", ""))])
                if has_trace(db, sample_id, teacher=meta["teacher"], steps=meta["steps"]):
                    skipped += 1
                    continue
                gt = Box(*meta["ground_truth"])
                fields = {
                    "run_id": None, "sample_id": sample_id, "teacher": meta["teacher"], "kind": meta["kind"],
                    "origin": "import", "status": meta["status"], "family": meta["family"],
                    "student_text": meta["student_text"], "student_box": meta["student_box"],
                    "student_iou": meta["student_iou"], "steps": meta["steps"], "flags": meta.get("flags", []),
                    "final_iou": iou(Box(*meta["steps"][-1]["box"]), gt), "meta": meta.get("meta", {}),
                }
                insert_trace(db, fields, reviewer, meta["expression"])
                created += 1
    finally:
        db.close()
    return {"created": created, "skipped_duplicates": skipped}
