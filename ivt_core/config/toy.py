"""``ToyConfig``: everything that determines the toy model (``training/toy_pretrain.py``), saved as
``train_config.json`` beside its weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ivt_core.config.settings import check_settings, setting
from ivt_core.data.shapes import ShapesConfig, named_world
from ivt_core.errors import InvalidInputError


def world_config(world: dict | str) -> ShapesConfig:
    """The shapes world a stored dict describes (JSON lists back to tuples), or a named one ("shapes-v2").
    Raises InvalidInputError for an unknown name or setting."""
    if isinstance(world, str):
        return named_world(world)
    unknown = set(world) - set(ShapesConfig.__dataclass_fields__)
    if unknown:
        raise InvalidInputError(f"unknown shapes-world settings {', '.join(sorted(unknown))}; "
                                f"use {', '.join(ShapesConfig.__dataclass_fields__)}")
    return ShapesConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in world.items()})


@dataclass
class ToyConfig:
    """The toy model's architecture, data and schedule."""

    seed: int = setting(0, "seed of the weights and of the scene stream", min=0)
    steps: int = setting(6000, "optimizer steps", min=1)
    batch_size: int = setting(256, "scenes per step", min=1, max=65536)
    lr: float = setting(1e-3, "peak learning rate (cosine schedule after warmup)", min=1e-8, max=0.1)
    min_lr_ratio: float = setting(0.05, "final learning rate as a share of the peak", min=0.0, max=1.0)
    warmup: int = setting(300, "linear warmup steps", min=0)
    weight_decay: float = setting(0.01, "AdamW weight decay on matrices", min=0.0, max=1.0)
    grad_clip: float = setting(1.0, "gradient norm clip", min=0.0)
    hidden: int = setting(256, "language model width", min=8)
    layers: int = setting(4, "language model layers", min=1, max=64)
    heads: int = setting(4, "attention heads", min=1)
    kv_heads: int = setting(2, "key/value heads (grouped-query attention)", min=1)
    intermediate: int = setting(768, "MLP width", min=8)
    vision_hidden: int = setting(256, "vision tower width", min=8)
    vision_depth: int = setting(4, "vision tower layers", min=1, max=64)
    vocab: int = setting(1024, "tokenizer vocabulary size", min=256)
    world: dict = setting(help="the shapes world: its settings (config file) or a name (shapes-v1, shapes-v2)",
                          default_factory=lambda: asdict(ShapesConfig()))
    init_from: str = setting("", "start from this toy model's weights (a folder) instead of random ones; the "
                                 "architecture settings above are then the model's own", path=True)
    multi_turn_prob: float = setting(0.0, "share of training conversations with more than one turn about the "
                                          "scene (re-shown with an arbitrary box drawn, another object asked)",
                                     min=0.0, max=1.0)
    max_turns: int = setting(3, "turns of a multi-turn conversation (2 .. this)", min=2, max=6)
    paraphrase_prob: float = setting(0.0, "share of questions asked in another wording (none asks to check or "
                                          "correct a box; training/toy_pretrain.py PARAPHRASES)", min=0.0, max=1.0)
    refine_wording_prob: float = setting(0.0, "share of the later turns of a multi-turn conversation asked in the "
                                              "loop's refine wording: an arbitrary box drawn, another object asked, "
                                              "its box the answer (the wording learnt, no correcting)",
                                         min=0.0, max=1.0)
    verdict_turn_prob: float = setting(0.0, "share of conversations that are a refinement turn on a box said to be "
                                            "the model's answer: the truth or a counterfactual (another object, "
                                            "edges off), answered verdict first (the SFT recipe on fresh scenes)",
                                       min=0.0, max=1.0)
    verdict_names_box: bool = setting(False, "verdict turns also name the object the drawn box is on, after the "
                                             "verdict (\"It is on the small red circle.\"): a denser signal about "
                                             "the drawn box than the verdict alone")
    verdict_name_first: bool = setting(False, "verdict turns name the object the drawn box is on before the verdict "
                                              "(\"It is on the small blue circle. Wrong colour.\"): look, then judge; "
                                              "the verdict can read the name")
    verdict_same_shape_share: float = setting(0.7, "share of a verdict turn's wrong boxes drawn on an object of the "
                                                    "asked shape when the scene has one (the base toy's own errors "
                                                    "are mostly those); the rest on any other object (up to 0.85 "
                                                    "in all) or the right object with its edges off",
                                              min=0.0, max=1.0)
    own_error_scenes: int = setting(0, "before training, run the starting model (init_from) greedy, single shot, "
                                       "on this many fresh scenes and keep its wrong boxes (IoU < 0.5) for verdict "
                                       "turns to judge (training/own_errors.py); 0: none", min=0, max=1_000_000)
    own_error_share: float = setting(0.0, "share of the verdict turns' wrong boxes that are one of those own "
                                          "errors (its scene, the starting model's box, the minimal verdict, the "
                                          "right box) instead of a counterfactual on a fresh scene; the right "
                                          "boxes' share stays a half", min=0.0, max=1.0)
    own_right_share: float = setting(0.0, "share of the verdict turns' right boxes that are the starting model's "
                                          "own right answers on those scenes (IoU >= 0.5, as it drew them: kept at "
                                          "IoU >= 0.9, else \"Edges off.\" and the right box) instead of jittered "
                                          "ground truths", min=0.0, max=1.0)
    verdict_checkable: bool = setting(False, "verdict turns name only a difference the expression's own words "
                                             "state (\"Wrong colour.\" only when it names a colour); any other "
                                             "wrong object is \"Wrong one.\" (the colour of \"the second hexagon "
                                             "from the top\" cannot be checked without grounding again)")
    second_verdict_prob: float = setting(0.0, "share of verdict turns followed by a second refinement turn, as the "
                                              "loop's step 2: the first answer judged again and kept, or (half the "
                                              "wrong boxes) a first correction that missed, judged and corrected",
                                         min=0.0, max=1.0)
    naming_prob: float = setting(0.0, "share of conversations (of those not verdict turns) that ask what is "
                                      "inside a box drawn on the scene, "
                                      "answered with the object's size, colour and shape (a captioning task: "
                                      "grounding alone lets the toy ignore colour)", min=0.0, max=1.0)
    eval_every: int = setting(1000, "run the loop on val scenes every N steps", min=1)
    eval_samples: int = setting(256, "val scenes per evaluation", min=1)
    save_every: int = setting(1000, "save last/ every N steps", min=1)
    workers: int = setting(8, "data loader processes", min=0, max=256)
    bf16: bool = setting(True, "bfloat16 autocast")
    time_limit_s: float = setting(0.0, "stop (and save) after this many seconds of training; 0: no limit", min=0.0)

    def check(self) -> ToyConfig:
        """Return self if the settings make sense. Raises InvalidInputError saying what to fix."""
        check_settings(self)
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise InvalidInputError("--hidden must divide by --heads, and --heads by --kv-heads")
        if self.own_error_scenes and not self.init_from:
            raise InvalidInputError("--own-error-scenes needs --init-from: the errors are a trained model's own")
        for share in ("own_error_share", "own_right_share"):
            if getattr(self, share) and not (self.own_error_scenes and self.verdict_turn_prob):
                raise InvalidInputError(f"--{share.replace('_', '-')} needs --own-error-scenes and "
                                        f"--verdict-turn-prob above 0")
        if self.verdict_checkable and not self.verdict_turn_prob:
            raise InvalidInputError("--verdict-checkable needs --verdict-turn-prob above 0")
        if self.second_verdict_prob and not self.verdict_turn_prob:
            raise InvalidInputError("--second-verdict-prob needs --verdict-turn-prob above 0")
        self.world = asdict(world_config(self.world).check())  # a name becomes the settings it stands for
        return self
