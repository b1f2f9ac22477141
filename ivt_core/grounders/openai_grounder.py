"""A grounder behind any OpenAI-compatible chat endpoint (a vLLM, SGLang, Ollama or LM Studio server).

Images travel as base64 PNG data URLs. Each request has a timeout; connection errors, timeouts, HTTP 429 and
5xx are retried with exponential backoff; anything else fails at once with a message that says what to fix.
Uses httpx (already installed with gradio) rather than the openai package: one POST is all this needs.
"""

from __future__ import annotations

import base64
import io
import time

from ivt_core.errors import InvalidInputError
from ivt_core.families import FAMILIES, Family, family_for_model_type, get_family
from ivt_core.grounders.base import Generation, Sampling


class EndpointError(InvalidInputError):
    """The server could not be reached or refused the request."""


def _data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _to_openai(conversation: list[dict]) -> list[dict]:
    messages = []
    for message in conversation:
        content = message["content"]
        if isinstance(content, str):
            messages.append({"role": message["role"], "content": content})
            continue
        parts = []
        for part in content:
            if part.get("type") == "image":
                parts.append({"type": "image_url", "image_url": {"url": _data_url(part["image"])}})
            elif part.get("type") == "text":
                parts.append({"type": "text", "text": part["text"]})
        messages.append({"role": message["role"], "content": parts})
    return messages


class OpenAIGrounder:
    def __init__(self, base_url: str, model: str, family: str | Family = "qwen2_5_vl", api_key: str | None = None,
                 timeout_s: float = 120.0, retries: int = 3, backoff_s: float = 1.0,
                 resized: tuple[int, int] | None = None, transport=None):
        import httpx

        if not base_url.startswith(("http://", "https://")):
            raise InvalidInputError(f"--teacher-url must start with http:// or https://, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.family = family if isinstance(family, Family) else (
            get_family(family) if family in FAMILIES else family_for_model_type(family, "abs"))
        self.name = f"{model}@{base_url}"
        self.retries, self.backoff_s = retries, backoff_s
        self._resized = resized
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s, headers=headers, transport=transport)

    def resized_size(self, width: int, height: int) -> tuple[int, int] | None:
        if self.family.convention == "abs_resized" and self._resized is None:
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

            factor = self.family.resize_factor()  # the processor's defaults: 4 to 1280 merged patches
            h, w = smart_resize(height, width, factor=factor, min_pixels=4 * factor ** 2,
                                max_pixels=1280 * factor ** 2)
            return w, h
        return self._resized

    def _post(self, payload: dict) -> dict:
        import httpx

        last = ""
        for attempt in range(self.retries + 1):
            try:
                response = self.client.post(self.url, json=payload)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"cannot reach {self.url} ({type(exc).__name__}); is the server running?"
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise EndpointError(f"{self.url} answered with something that is not JSON") from exc
                if response.status_code == 429 or response.status_code >= 500:
                    last = f"{self.url} answered HTTP {response.status_code}"
                else:
                    raise EndpointError(f"{self.url} refused the request: HTTP {response.status_code} "
                                        f"{response.text[:200]} (check the model name and the URL)")
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2 ** attempt)
        raise EndpointError(f"{last} - gave up after {self.retries + 1} tries")

    def predict(self, conversations: list[list[dict]], sampling: Sampling | None = None) -> list[Generation]:
        sampling = sampling or Sampling()
        out = []
        for conversation in conversations:
            payload = {"model": self.model, "messages": _to_openai(conversation),
                       "max_tokens": sampling.max_new_tokens,
                       "temperature": sampling.temperature if sampling.do_sample else 0.0}
            start = time.perf_counter()
            data = self._post(payload)
            try:
                text = data["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                text = ""
            usage = data.get("usage") or {}
            out.append(Generation(text.strip(), int(usage.get("prompt_tokens", 0)),
                                  int(usage.get("completion_tokens", 0)), (time.perf_counter() - start) * 1000))
        return out
