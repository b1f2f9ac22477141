"""Train the toy model: a small Qwen3-VL learning shapes-world grounding from scratch (single shot).

    python -m training.toy_pretrain --out build/toy-model                 # defaults = the first toy's config
    python -m training.toy_pretrain --out build/toy-model --resume        # continue from build/toy-model/last/
    python -m training.toy_pretrain --config training/recipes/toy_base_v1.json --out build/toy-base-v1  # the first toy
    python -m training.toy_pretrain --config toy-v2.json --init-from assets/toy-model --out build/toy-v2  # go on

The model is the real ``Qwen3VLForConditionalGeneration`` at toy size, with the tiny-model kit's tokenizer,
image processor and chat template. Each step draws fresh scenes (sample indices step * batch .. ): the data
stream is a function of the seed, so a run (and a resumed run) is reproducible. Prompt: the family's step-0
grounding prompt; target: ``{"bbox_2d": [x1, y1, x2, y2]}`` in 0-1000 coordinates.
Every ``eval_every`` steps it runs the real loop (``ivt_core.loop``, greedy) on held-out val scenes and logs
Acc@0.5, the format-valid rate and the re-ask probe. With ``multi_turn_prob`` some conversations have several
turns about one scene (``ShapesGrounding``), so the model can hold a conversation as long as the loop's; with
``paraphrase_prob`` some questions come in other wordings. Loss on every answer. The resolved config is saved
with every checkpoint (``train_config.json``); ``last/`` holds what ``--resume`` needs (weights, optimizer,
scheduler, step).

Three options put refinement turns in the data: ``refine_wording_prob`` asks some later turns in the loop's refine
wording (an arbitrary box drawn, another object asked: the wording, not correcting); ``verdict_turn_prob`` is the
SFT recipe's refinement turn on fresh scenes (a drawn box given as the model's answer, judged verdict first, at
any scale: the SFT trainer learns from stored traces, this from an unbounded stream), and ``verdict_names_box``
adds the name of the object the box is on after the verdict (``verdict_name_first``: before it, look then judge).
With ``own_error_scenes`` the starting model's own step-0 answers on fresh scenes are collected first
(``training/own_errors.py``) and ``own_error_share`` of the verdict turns' wrong boxes are its errors: a scene
where grounding again gives the same wrong box, so only reading the drawn box answers it (``own_right_share``: of
the right boxes, its own right answers as it drew them, kept or, under IoU 0.9, "Edges off.").
``second_verdict_prob`` adds the loop's step 2 (a second refinement turn: the first answer judged again, or a
missed correction corrected); without it a verdict-trained toy breaks at step 2 (docs/LOG.md, session 22). A toy
trained with verdict turns has been taught to check boxes: it is an SFT model, not a base
(``training/recipes/toy_verdict_v1.json``; docs/LOG.md, session 19).

``naming_prob`` adds a captioning task that checks no box: one object's box drawn on the scene, the question
what is inside it, the answer its size, colour and shape ("The small red circle."). Grounding alone lets the toy
ignore colour (its patch merger drops it; docs/LOG.md, session 20); naming asks for it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ivt_core.boxes import Box, iou, to_model
from ivt_core.config.flags import add_config_arguments, config_from_args
from ivt_core.config.settings import stored
from ivt_core.config.toy import ToyConfig, world_config
from ivt_core.data.shapes import make_sample, other_questions, stated_attributes
from ivt_core.prompts import get_prompts
from ivt_core.render import RENDER_STYLES, render_box
from ivt_core.supervision import build_text_example, collate, cpu_rope_index, patchify_on_device
from ivt_core.teachers.geometric import (
    EDGES_OFF_MINIMAL,
    KEEP_MINIMAL,
    covered_object,
    minimal_verdict,
    minimal_verdict_on,
    object_name,
)
from ivt_core.tinykit import TinySpec, build_tiny_model
from training.own_errors import MINED_SPLIT, WRONG_BELOW_IOU, load_or_mine


def answer_text(box, size) -> str:
    return json.dumps({"bbox_2d": to_model(box, "norm1000", size)})


# Other wordings of the grounding request, none of which asks to check or correct anything: with
# ``paraphrase_prob`` the toy learns to follow an instruction it has not seen word for word (find the quoted
# expression, answer with its box), as an instruction-tuned VLM does, instead of only one fixed sentence.
PARAPHRASES = (
    'Find "{expression}" and answer with its bounding box as JSON {{"bbox_2d": [x1, y1, x2, y2]}} with '
    "coordinates from 0 to 1000.",
    'This image shows several shapes{drawn}. Which one is "{expression}"? Give its bounding box as JSON '
    '{{"bbox_2d": [x1, y1, x2, y2]}} with coordinates from 0 to 1000.',
    "Look at this image again{drawn}. Now give the bounding box of \"{expression}\" as JSON "
    '{{"bbox_2d": [x1, y1, x2, y2]}} with coordinates from 0 to 1000.',
    "Here is the same scene{drawn}; the box, if any, may mark any object. Say nothing else: output the "
    'bounding box of "{expression}" as JSON {{"bbox_2d": [x1, y1, x2, y2]}} with coordinates from 0 to 1000.',
)

# The questions of the naming task (``naming_prob``): what is inside a drawn box.
NAMING_QUESTIONS = (
    "What is inside the box drawn on the image? Name it by size, colour and shape.",
    "Which object does the drawn box mark? Answer with its size, colour and shape.",
)


class ShapesGrounding(torch.utils.data.Dataset):
    """Example ``i`` is scene ``i`` of the train split as a grounding conversation with its answers.

    With probability ``multi_turn_prob`` the conversation goes on for 2 .. ``max_turns`` turns about the same
    scene: each later turn re-shows the scene with an arbitrary box drawn (any object's box, the asked one
    included by chance, a random box, or none; outline or paper style) and asks about another object. So the
    model learns to hold conversations as long as the IVT loop's, while the drawn box says nothing about the
    answer: it is never taught to keep, move or correct a box. Loss on every answer. With
    ``verdict_turn_prob`` some examples are verdict turns instead (``_verdict_example``), which do teach that.
    """

    def __init__(self, processor, world, seed: int, length: int, start: int = 0, multi_turn_prob: float = 0.0,
                 max_turns: int = 3, paraphrase_prob: float = 0.0, refine_wording_prob: float = 0.0,
                 verdict_turn_prob: float = 0.0, verdict_names_box: bool = False,
                 verdict_same_shape_share: float = 0.7, naming_prob: float = 0.0, verdict_name_first: bool = False,
                 own_errors: list[dict] | None = None, own_error_share: float = 0.0,
                 second_verdict_prob: float = 0.0, own_right: list[dict] | None = None, own_right_share: float = 0.0,
                 verdict_checkable: bool = False):
        self.processor, self.world, self.seed, self.length, self.start = processor, world, seed, length, start
        self.multi_turn_prob, self.max_turns, self.paraphrase_prob = multi_turn_prob, max_turns, paraphrase_prob
        self.refine_wording_prob, self.verdict_turn_prob = refine_wording_prob, verdict_turn_prob
        self.verdict_names_box, self.verdict_same_shape_share = verdict_names_box, verdict_same_shape_share
        self.naming_prob, self.verdict_name_first = naming_prob, verdict_name_first
        self.own_errors, self.own_error_share = own_errors or [], own_error_share
        self.second_verdict_prob = second_verdict_prob
        self.own_right, self.own_right_share = own_right or [], own_right_share
        self.verdict_checkable = verdict_checkable
        self.prompts = get_prompts("qwen3_vl")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        s = make_sample(self.world, self.seed, "train", self.start + i)
        rng = random.Random(f"{self.seed}:turns:{self.start + i}")
        if self.verdict_turn_prob and rng.random() < self.verdict_turn_prob:
            return self._verdict_example(s, rng)
        if self.naming_prob and rng.random() < self.naming_prob:
            return self._naming_example(s, rng)
        questions = [(s.expression, s.bbox)]
        if self.multi_turn_prob and rng.random() < self.multi_turn_prob:
            questions += other_questions(s, rng, rng.randint(1, self.max_turns - 1))
        conversation, images = [], []
        for turn, (expression, box) in enumerate(questions):
            drawn = arbitrary_box(s, rng) if turn else None
            image = render_box(s.image, drawn, RENDER_STYLES[rng.choice(("outline", "paper"))]) if turn else s.image
            images.append(image)
            text = self.prompts.ground_text(expression)
            if turn and self.refine_wording_prob and rng.random() < self.refine_wording_prob:
                text = self.prompts.refine_text(expression)  # the loop's wording; the box drawn is not an answer
            elif self.paraphrase_prob and rng.random() < self.paraphrase_prob:
                text = rng.choice(PARAPHRASES).format(expression=expression,
                                                      drawn=" with a box drawn on it" if drawn else "")
            conversation += [
                {"role": "user", "content": [{"type": "image", "image": image},
                                             {"type": "text", "text": text}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer_text(box, s.image.size)}]},
            ]
        return self._example(conversation, images, list(range(1, len(conversation), 2)))

    def _verdict_example(self, s, rng: random.Random) -> dict:
        """The loop's first refinement turn on fresh scene ``s``: the grounding question, a box given as the
        model's answer (``verdict_box``), that box drawn and the refine prompt; the answer gives its verdict first
        ("The box is correct." and the same box, or the minimal teacher's kind of error and the right box). Loss
        on the refinement answers only: the first answer is the counterfactual, not a target. With
        ``second_verdict_prob`` a second refinement turn follows, as the loop's step 2 (``second_turn``)."""
        drawn, verdict = verdict_box(s, rng, self.verdict_same_shape_share, self._stated(s))
        own, share = ((self.own_right, self.own_right_share) if verdict == KEEP_MINIMAL
                      else (self.own_errors, self.own_error_share))
        if own and rng.random() < share:  # the starting model's own answer instead, on the scene it was made on
            mined = rng.choice(own)
            s = make_sample(self.world, self.seed, MINED_SPLIT, mined["index"])
            drawn = Box(*mined["box"])
            overlap = iou(drawn, s.bbox)
            verdict = (KEEP_MINIMAL if overlap >= RIGHT_MIN_IOU else EDGES_OFF_MINIMAL if overlap >= WRONG_BELOW_IOU
                       else minimal_verdict_on(drawn, s.meta["objects"], s.meta["target"], self._stated(s)))
        right = drawn if verdict == KEEP_MINIMAL else s.bbox
        turns = [(drawn, verdict, right, True)]
        if self.second_verdict_prob and rng.random() < self.second_verdict_prob:
            turns = second_turn(s, rng, drawn, verdict, right, self._stated(s))
        style = RENDER_STYLES[rng.choice(("outline", "outline", "outline", "paper"))]
        conversation = [
            {"role": "user", "content": [{"type": "image", "image": s.image},
                                         {"type": "text", "text": self.prompts.ground_text(s.expression)}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer_text(drawn, s.image.size)}]},
        ]
        images, trained = [s.image], []
        for judged, judged_verdict, answer, target in turns:
            images.append(render_box(s.image, judged, style))
            text = f"{self._verdict_text(s, judged, judged_verdict)}\n{answer_text(answer, s.image.size)}"
            conversation += [
                {"role": "user", "content": [{"type": "image", "image": images[-1]},
                                             {"type": "text", "text": self.prompts.refine_text(s.expression)}]},
                {"role": "assistant", "content": [{"type": "text", "text": text}]},
            ]
            if target:
                trained.append(len(conversation) - 1)
        return self._example(conversation, images, trained)

    def _stated(self, s) -> dict[str, str] | None:
        """With ``verdict_checkable``, the attributes the scene's expression states (a verdict names no other)."""
        return stated_attributes(s.expression) if self.verdict_checkable else None

    def _verdict_text(self, s, judged: Box, verdict: str) -> str:
        if self.verdict_name_first:
            return f"It is on {boxed_object_name(s, judged)}. {verdict}"
        if self.verdict_names_box:
            return f"{verdict} It is on {boxed_object_name(s, judged)}."
        return verdict

    def _naming_example(self, s, rng: random.Random) -> dict:
        """A scene with one object's box drawn (outline only: a fill would recolour it), and the question what is
        in it; the answer names the object by size, colour and shape. A captioning task, as real VLMs are
        pretrained on: it asks for the attributes of what is there, which grounding alone lets the toy ignore
        (docs/LOG.md, session 20: the base toy's patch merger drops colour)."""
        objects = s.meta["objects"]
        named = objects[rng.randrange(len(objects))]
        image = render_box(s.image, Box(*named["box"]), RENDER_STYLES["outline"])
        conversation = [
            {"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": rng.choice(NAMING_QUESTIONS)}]},
            {"role": "assistant", "content": [{"type": "text", "text": f"The {object_name(named)}."}]},
        ]
        return self._example(conversation, [image], [1])

    def _example(self, conversation: list[dict], images: list, train_turns: list[int]) -> dict:
        example = build_text_example(self.processor, conversation, [im.size for im in images],
                                     train_turns=train_turns)
        example["images"] = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images]))
        return example


# The box a verdict turn judges (``verdict_box``): half the time the asked object's own box (edges jittered, IoU
# >= 0.9 kept), else a counterfactual shaped like the base toy's own step-0 errors (toy-diagnosis.md: 116 of 119
# are another object, 91 of them the same shape in another colour): a same-shape object when there is one, any
# other object, or the right object with its edges off (IoU 0.3-0.85).
VERDICT_RIGHT_SHARE = 0.5
RIGHT_MIN_IOU = 0.9


def verdict_box(sample, rng: random.Random, same_shape_share: float = 0.7,
                stated: dict[str, str] | None = None) -> tuple[Box, str]:
    """(box drawn as the model's answer, the minimal verdict on it): ``KEEP_MINIMAL`` for a box that fits the
    asked object within IoU 0.9, else what is wrong with it (naming only a ``stated`` attribute, when given).
    ``same_shape_share`` of the wrong boxes (up to 0.85) go to a same-shape object when the scene has one."""
    target = sample.meta["objects"][sample.meta["target"]]
    truth = sample.bbox
    w, h = sample.image.size
    if rng.random() < VERDICT_RIGHT_SHARE:
        return _moved(truth, rng, 0.04, w, h, lambda b: iou(b, truth) >= RIGHT_MIN_IOU, truth), KEEP_MINIMAL
    others = [o for j, o in enumerate(sample.meta["objects"]) if j != sample.meta["target"]]
    same_shape = [o for o in others if o["kind"] == target["kind"]]
    roll = rng.random()
    if others and roll < 0.85:
        pool = same_shape if same_shape and roll < min(same_shape_share, 0.85) else others
        other = rng.choice(pool)
        return Box(*other["box"]), minimal_verdict(other, target, stated)
    off = _moved(truth, rng, 0.5, w, h, lambda b: 0.3 <= iou(b, truth) <= 0.85, None)
    return (off, EDGES_OFF_MINIMAL) if off is not None else (truth, KEEP_MINIMAL)


def second_turn(sample, rng: random.Random, drawn: Box, verdict: str, right: Box,
                stated: dict[str, str] | None = None) -> list[tuple]:
    """The refinement turns (box judged, its verdict, the answer's box, trained?) of a verdict example with the
    loop's step 2: the first answer's box judged again and kept; or, for half the wrong boxes, a first correction
    that missed (another object's box, its answer not a target) judged and corrected in the second turn
    (``stated`` as in ``verdict_box``)."""
    target = sample.meta["target"]
    objects = sample.meta["objects"]
    covered, _ = covered_object(drawn, objects)
    others = [o for j, o in enumerate(objects) if j not in (target, covered)]
    if verdict != KEEP_MINIMAL and others and rng.random() < 0.5:
        missed = rng.choice(others)
        missed_box = Box(*missed["box"])
        return [(drawn, verdict, missed_box, False),
                (missed_box, minimal_verdict(missed, objects[target], stated), sample.bbox, True)]
    return [(drawn, verdict, right, True), (right, KEEP_MINIMAL, right, True)]


def boxed_object_name(sample, box: Box) -> str:
    """What ``box`` is on: "the small red circle" (the object it overlaps most, IoU >= 0.1), or "nothing"."""
    covered, _ = covered_object(box, sample.meta["objects"])
    return "nothing" if covered is None else f"the {object_name(sample.meta['objects'][covered])}"


def _moved(box: Box, rng: random.Random, scale: float, w: int, h: int, accept, fallback, tries: int = 20):
    """``box`` with each edge moved by up to ``scale`` of its size, clipped to the image, first that ``accept``s
    (``fallback`` after ``tries``)."""
    for _ in range(tries):
        dx, dy = scale * box.width, scale * box.height
        moved = Box(max(0.0, box.x1 + rng.uniform(-dx, dx)), max(0.0, box.y1 + rng.uniform(-dy, dy)),
                    min(float(w), box.x2 + rng.uniform(-dx, dx)), min(float(h), box.y2 + rng.uniform(-dy, dy)))
        if moved.x2 - moved.x1 >= 2 and moved.y2 - moved.y1 >= 2 and accept(moved):
            return moved
    return fallback


def arbitrary_box(sample, rng: random.Random):
    """A box to draw that carries no information about the next question: some object's box (70 %), a random
    box (20 %) or none (10 %)."""
    roll = rng.random()
    if roll < 0.7:
        return Box(*rng.choice(sample.meta["objects"])["box"])
    if roll < 0.9:
        w, h = sample.image.size
        bw, bh = rng.uniform(8, w / 3), rng.uniform(8, h / 3)
        x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        return Box(x, y, x + bw, y + bh)
    return None


def collate_scenes(examples: list[dict], pad: int, rope) -> dict:
    """Text fields padded by ``supervision.collate``; the raw images (in conversation order) stacked for
    ``patchify_on_device``."""
    batch = collate(examples, pad, rope)
    batch["images"] = torch.cat([e["images"] for e in examples])
    return batch


def lr_at(step: int, cfg: ToyConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def evaluate_val(model, processor, cfg: ToyConfig, device: str) -> dict:
    """Single-shot Acc@0.5 and format-valid rate on val scenes, through the real loop and grounder; and the
    re-ask probe (the same question again in a second turn, ``ivt_core.probe``): readable share and Acc@0.5."""
    from ivt_core.data.sample import Sample
    from ivt_core.families import FAMILIES
    from ivt_core.grounders.base import Sampling
    from ivt_core.grounders.transformers_grounder import TransformersGrounder
    from ivt_core.loop import LoopConfig, run_batch
    from ivt_core.metrics import run_metrics
    from ivt_core.probe import REASK, probe_samples

    grounder = TransformersGrounder(model, processor, FAMILIES["qwen3_vl"], "toy", device)
    world = world_config(cfg.world)
    loop = LoopConfig(steps=0, batch_size=64, sampling=Sampling(max_new_tokens=40))
    model.eval()
    trajectories, reask = [], []
    for begin in range(0, cfg.eval_samples, 64):
        raw = [make_sample(world, cfg.seed, "val", i) for i in range(begin, min(cfg.eval_samples, begin + 64))]
        samples = [Sample(s.id, "shapes", "val", "", 0, 0, s.expression, s.bbox) for s in raw]
        images = [s.image for s in raw]
        trajectories += run_batch(grounder, samples, loop, images)
        reask += probe_samples(grounder, samples, images, sampling=Sampling(max_new_tokens=40),
                               counterfactuals=(REASK,))
    model.train()
    m = run_metrics(trajectories)
    return {"val_acc@0.5": m["step0"]["acc@0.5"], "val_miou": m["step0"]["miou"],
            "val_format_ok": 1 - m["parse_failure_rate"],
            "val_reask_readable": sum(r.parse_ok for r in reask) / len(reask),
            "val_reask_acc@0.5": sum(r.next_iou >= 0.5 for r in reask) / len(reask)}


def save(model, processor, out: Path, cfg: ToyConfig, state: dict | None, metrics: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="15MB")
    processor.save_pretrained(out)
    processor.image_processor.save_pretrained(out)
    (out / "chat_template.jinja").write_text(processor.chat_template)
    (out / "train_config.json").write_text(json.dumps(stored(cfg), indent=1))
    (out / "train_metrics.json").write_text(json.dumps(metrics, indent=1))
    if state is not None:
        torch.save(state, out / "trainer_state.pt")


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoModelForImageTextToText
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

    from ivt_core.grounders.fast_vision import enable_fast_vision
    from ivt_core.grounders.processing import load_processor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the finished model (last/ inside for resuming)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last/")
    parser.add_argument("--device", default="auto")
    add_config_arguments(parser, ToyConfig)  # --config FILE (e.g. a shipped train_config.json) and a flag per field
    args = parser.parse_args(argv)
    cfg = config_from_args(ToyConfig, args).check()
    out = Path(args.out)
    last = out / "last"
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto"
                                                                                   else args.device)
    torch.manual_seed(cfg.seed)

    if args.resume and (last / "trainer_state.pt").is_file():
        model = AutoModelForImageTextToText.from_pretrained(last, dtype=torch.float32)
        processor = load_processor(last, "qwen3_vl")
        state = torch.load(last / "trainer_state.pt", map_location="cpu", weights_only=True)
        start = state["step"]
        history = json.loads((last / "train_metrics.json").read_text()).get("history", [])
    elif cfg.init_from:
        model = AutoModelForImageTextToText.from_pretrained(cfg.init_from, dtype=torch.float32)
        processor = load_processor(cfg.init_from, "qwen3_vl")
        state, start, history = None, 0, []
        text, vision = model.config.text_config, model.config.vision_config
        cfg.hidden, cfg.layers, cfg.heads = text.hidden_size, text.num_hidden_layers, text.num_attention_heads
        cfg.kv_heads, cfg.intermediate, cfg.vocab = text.num_key_value_heads, text.intermediate_size, text.vocab_size
        cfg.vision_hidden, cfg.vision_depth = vision.hidden_size, vision.depth  # the stored config says what it is
    else:
        spec = TinySpec(hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads, kv_heads=cfg.kv_heads,
                        intermediate=cfg.intermediate, vision_hidden=cfg.vision_hidden, vision_depth=cfg.vision_depth,
                        vision_heads=max(1, cfg.vision_hidden // 64), vocab=cfg.vocab, seed=cfg.seed)
        build_tiny_model(last, "qwen3_vl", spec)
        model = AutoModelForImageTextToText.from_pretrained(last, dtype=torch.float32)
        processor = load_processor(last, "qwen3_vl")
        state, start, history = None, 0, []
    model.to(device).train()
    enable_fast_vision(model)
    params = sum(p.numel() for p in model.parameters())
    print(f"toy model: {params / 1e6:.2f} M parameters on {device}; steps {start} -> {cfg.steps}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])

    own = {"errors": [], "right": []}
    if cfg.own_error_scenes:
        own = load_or_mine(out / "own_errors.json", model, processor, world_config(cfg.world), cfg.seed,
                           cfg.own_error_scenes, device, cfg.init_from, cfg.workers)
        print(f"own answers: {len(own['errors'])} wrong and {len(own['right'])} right in {cfg.own_error_scenes} "
              f"scenes", flush=True)
    rope = cpu_rope_index(Qwen3VLModel, model.config)
    pad = processor.tokenizer.pad_token_id
    dataset = ShapesGrounding(processor, world_config(cfg.world), cfg.seed,
                              (cfg.steps - start) * cfg.batch_size, start * cfg.batch_size,
                              cfg.multi_turn_prob, cfg.max_turns, cfg.paraphrase_prob, cfg.refine_wording_prob,
                              cfg.verdict_turn_prob, cfg.verdict_names_box, cfg.verdict_same_shape_share,
                              cfg.naming_prob, cfg.verdict_name_first, own["errors"], cfg.own_error_share,
                              cfg.second_verdict_prob, own["right"], cfg.own_right_share,
                              verdict_checkable=cfg.verdict_checkable)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
        collate_fn=lambda ex: collate_scenes(ex, pad, rope), prefetch_factor=4 if cfg.workers else None,
    )
    began = time.time()
    step = start
    bar = tqdm(total=cfg.steps, initial=start, desc="toy pretrain", unit="step")
    window: list[float] = []
    for batch in loader:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        batch["pixel_values"] = patchify_on_device(batch.pop("images"), processor.image_processor)
        with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16,
                            enabled=cfg.bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window.append(loss.item())
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(window) / len(window):.4f}", lr=f"{lr_at(step, cfg):.2e}")
            history.append({"step": step, "loss": sum(window) / len(window), "seconds": time.time() - began})
            window = []
        over_time = cfg.time_limit_s and time.time() - began > cfg.time_limit_s
        if step % cfg.eval_every == 0 or step == cfg.steps or over_time:
            scores = evaluate_val(model, processor, cfg, device)
            history.append({"step": step, **scores, "seconds": time.time() - began})
            print(f"step {step}: {scores}", flush=True)
        if step % cfg.save_every == 0 or step == cfg.steps or over_time:
            save(model, processor, last, cfg, {"step": step, "optimizer": optimizer.state_dict()},
                 {"history": history})
        if over_time:
            print(f"time limit reached at step {step}; resume with --resume", flush=True)
            break
    bar.close()
    if step >= cfg.steps:
        model.to(torch.bfloat16)
        save(model, processor, out, cfg, None, {"history": history, "seconds": time.time() - began,
                                                "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"})
        print(f"saved the toy model to {out}", flush=True)


def cli(argv: list[str] | None = None) -> int:
    """``main`` as a command: a setting that makes no sense is one line on stderr and exit status 2."""
    from ivt_core.errors import IVTError

    try:
        main(argv)
    except IVTError as exc:
        print(f"toy_pretrain: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
