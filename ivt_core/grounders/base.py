"""The Grounder protocol: turn a batch of conversations (text + PIL images) into answers.

The loop owns the conversations; a grounder only runs a model. Beside the text, each answer carries its token
counts and latency for the step record (DESIGN.md's ``predict -> list[str]``, with those counts attached).
A conversation is a list of chat messages in the transformers format::

    [{"role": "user", "content": [{"type": "image", "image": <PIL.Image>}, {"type": "text", "text": "..."}]},
     {"role": "assistant", "content": [{"type": "text", "text": "..."}]}, ...]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ivt_core.families import Family


@dataclass(frozen=True)
class Generation:
    """One answer. ``token_ids``: the tokens sampled, up to and including the end token (GRPO scores these,
    not the text tokenized again); ``truncated``: the answer hit the token limit before an end token;
    ``prompt_ids``: the exact ids the model was fed before answering (the cached engine gives them; GRPO builds
    its training sequences from them instead of templating and tokenizing each rollout again), else empty.
    Of a forced start (``chat_text``) a grounder gives what the model added after it; the loop joins the two."""

    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: float = 0.0
    token_ids: tuple[int, ...] = ()
    truncated: bool = False
    prompt_ids: tuple[int, ...] = ()
    own_text: str = ""  # the model's own answer, where the loop made it start otherwise (``derived_verdict``)


@dataclass(frozen=True)
class Sampling:
    """Decoding settings: greedy by default; GRPO rollouts sample from softmax(logits / temperature), cut to the
    top-p nucleus, and nothing else (no top-k, whatever a checkpoint's generation config says): the plain loop
    and the cached engine draw from the same distribution, the one GRPO's log-probabilities score."""

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0


class Grounder(Protocol):
    family: Family
    name: str

    def predict(self, conversations: list[list[dict]], sampling: Sampling | None = None) -> list[Generation]:
        """One answer per conversation, in order."""
        ...

    def resized_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The size the model sees an image at (needed by the ``abs_resized`` convention), or None."""
        ...


def assistant_message(text: str) -> dict:
    """An answer in a conversation; as the last message, the start the model must go on from (``chat_text``)."""
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def chat_text(processor, conversation: list[dict]) -> str:
    """The text a model is fed for a conversation: the chat template, ending with the generation prompt. A
    conversation whose last message is the assistant's is a forced start: that message's text follows the
    generation prompt, and the model's answer goes on from it (the loop's derived verdict). Not transformers'
    ``continue_final_message``: it strips the forced text's trailing whitespace, and the line break before a
    box is part of the answers the toys were trained on."""
    if conversation and conversation[-1]["role"] == "assistant":
        start = "".join(part["text"] for part in conversation[-1]["content"] if part.get("type") == "text")
        return processor.apply_chat_template(conversation[:-1], add_generation_prompt=True, tokenize=False) + start
    return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


def conversation_images(conversation: list[dict]) -> list:
    """The images of a conversation in the order they appear."""
    return [
        part["image"]
        for message in conversation
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image"
    ]
