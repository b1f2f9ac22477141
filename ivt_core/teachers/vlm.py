"""The VLM teacher: any grounder (a local checkpoint or an OpenAI-compatible server) writes the reasoning.

It is shown the image with the student's current box drawn, told where the box should go (as a hint, in the
model's own coordinates), and asked to explain the correction as if it had found it itself, then to give the
box. Its box is parsed and checked: if it is further than ``tolerance`` (IoU) from the target, or unreadable,
the step is flagged (``teacher_box_mismatch`` / ``teacher_unparsable``) for the reviewer; the trace keeps the
interpolated target box either way. Text that mentions being given the answer is flagged ``mentions_hint``.
"""

from __future__ import annotations

import json

from ivt_core.boxes import from_model, iou, to_model
from ivt_core.grounders.base import Grounder, Sampling
from ivt_core.parse import parse_answer
from ivt_core.render import render_box
from ivt_core.teachers.base import FORBIDDEN_PHRASES, TeachContext, TeacherOutput

PROMPT = (
    'The red box on this image is a first attempt at locating "{expression}". The box it should move to{how} is '
    "{target} in the same coordinates. Explain in two or three sentences, as if you found the correction "
    "yourself, what the red box covers and how its edges must move. Do not mention that a target was given. "
    'End with the corrected box as JSON {{"bbox_2d": [x1, y1, x2, y2]}}.'
)


class VLMTeacher:
    def __init__(self, grounder: Grounder, tolerance: float = 0.9, max_new_tokens: int = 256):
        self.grounder = grounder
        self.name = "vlm"
        self.tolerance = tolerance
        self.sampling = Sampling(max_new_tokens=max_new_tokens)

    def write(self, contexts: list[TeachContext]) -> list[TeacherOutput]:
        conversations = []
        for ctx in contexts:
            size = ctx.image.size
            resized = self.grounder.resized_size(*size)
            target = to_model(ctx.target, self.grounder.family.convention, size, resized)
            how = "" if ctx.is_last else " in this step (part of the way)"
            text = PROMPT.format(expression=ctx.expression, target=json.dumps(target), how=how)
            conversations.append([{"role": "user", "content": [
                {"type": "image", "image": render_box(ctx.image, ctx.current)}, {"type": "text", "text": text}]}])
        answers = self.grounder.predict(conversations, self.sampling)
        outputs = []
        for ctx, answer in zip(contexts, answers, strict=True):
            parsed = parse_answer(answer.text)
            flags, box = [], None
            if parsed.coords is None:
                flags.append("teacher_unparsable")
            else:
                size = ctx.image.size
                box = from_model(parsed.coords, self.grounder.family.convention, size,
                                 self.grounder.resized_size(*size))
                if iou(box, ctx.target) < self.tolerance:
                    flags.append("teacher_box_mismatch")
            reasoning = parsed.reasoning or answer.text
            if any(p in reasoning.lower() for p in FORBIDDEN_PHRASES + ("target was given", "was given")):
                flags.append("mentions_hint")
            outputs.append(TeacherOutput(reasoning.strip(), box, flags, answer.text))
        return outputs
