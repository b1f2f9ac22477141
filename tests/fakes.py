"""A scripted grounder: answers come from a function of (sample expression, step), no model involved."""

from ivt_core.families import FAMILIES
from ivt_core.grounders.base import Generation


class ScriptedGrounder:
    forced_starts = True  # a conversation may end with the start of its answer (``with_conversation`` sees it)

    def __init__(self, answer, family="qwen3_vl", resized=None, fail_on_call=None, with_conversation=False):
        self.answer = answer
        self.with_conversation = with_conversation
        self.family = FAMILIES[family]
        self.name = "scripted"
        self.resized = resized
        self.calls = []
        self.fail_on_call = fail_on_call

    def resized_size(self, width, height):
        return self.resized

    def predict(self, conversations, sampling=None):
        self.calls.append(conversations)
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("model crashed")
        out = []
        for conv in conversations:
            text = conv[0]["content"][1]["text"]
            step = sum(1 for m in conv if m["role"] == "assistant")
            args = (text, step, conv) if self.with_conversation else (text, step)
            out.append(Generation(self.answer(*args), tokens_in=10, tokens_out=5))
        return out
