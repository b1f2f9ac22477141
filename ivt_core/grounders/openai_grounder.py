"""A grounder behind any OpenAI-compatible chat endpoint (``ivt serve``, vLLM, SGLang, Ollama, LM Studio).

Images travel as base64 PNG data URLs; the same image always gives the same bytes and every request repeats
the conversation's earlier turns exactly, so a server with prefix caching (vLLM, SGLang) reuses them. Up to
``concurrency`` requests are in flight at once (the loop runs each sample's conversation on its own, see
``loop.run_concurrent``, so a server that batches keeps that many conversations going). Each request has a
timeout; connection errors, timeouts, HTTP 429 and 5xx are retried with exponential backoff; anything else
fails at once with a message that says what to fix. Without a model name or family, the server's
``/v1/models`` says them (``ivt serve`` gives the family; other servers need ``--endpoint-family``).
Uses httpx (already installed with gradio) rather than the openai package: a POST and a GET are all this needs.
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
    def __init__(self, base_url: str, model: str = "", family: str | Family | None = "qwen2_5_vl",
                 api_key: str | None = None, timeout_s: float = 120.0, retries: int = 3, backoff_s: float = 1.0,
                 resized: tuple[int, int] | None = None, transport=None, concurrency: int = 1):
        import httpx

        if not base_url.startswith(("http://", "https://")):
            raise InvalidInputError(f"the endpoint URL must start with http:// or https://, got {base_url!r}")
        if concurrency < 1:
            raise InvalidInputError(f"concurrency must be at least 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.retries, self.backoff_s = retries, backoff_s
        self.concurrency = concurrency
        self._resized = resized
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
        self.client = httpx.Client(timeout=timeout_s, headers=headers, transport=transport, limits=limits)
        if not model or not family:
            listed = self._served_model(model)
            model = model or listed["id"]
            family = family or listed.get("ivt_family")
            if not family:
                raise InvalidInputError(f"{self.base_url} does not say the model's family; give it "
                                        "(--endpoint-family qwen3_vl, qwen2_5_vl, ...)")
        self.model = model
        self.family = family if isinstance(family, Family) else (
            get_family(family) if family in FAMILIES else family_for_model_type(family, "abs"))
        self.name = f"{model}@{base_url}"  # its registry name (``served_model``)
        self.run_settings = {"endpoint_model": model}  # stored with a run, so that resuming it asks the same model

    def _served_model(self, wanted: str) -> dict:
        """The ``/v1/models`` entry of ``wanted`` (or the first one listed). Raises EndpointError."""
        import httpx

        try:
            response = self.client.get(self.base_url + "/models")
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise EndpointError(f"cannot reach {self.base_url}/models ({type(exc).__name__}); is the server "
                                "running?") from None
        try:
            listed = response.json()["data"] if response.status_code == 200 else None
        except (ValueError, KeyError, TypeError):
            listed = None
        if not listed:
            raise EndpointError(f"{self.base_url}/models answered HTTP {response.status_code} without a model list; "
                                "give the model name and family (--endpoint-model, --endpoint-family)")
        for entry in listed:
            if not wanted or entry.get("id") == wanted:
                return entry
        raise EndpointError(f"{self.base_url} serves {[e.get('id') for e in listed]}, not {wanted!r}")

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
        """One answer per conversation, in order; up to ``concurrency`` requests in flight."""
        sampling = sampling or Sampling()
        if self.concurrency == 1 or len(conversations) == 1:
            return [self._answer(conversation, sampling) for conversation in conversations]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(lambda conversation: self._answer(conversation, sampling), conversations))

    def _answer(self, conversation: list[dict], sampling: Sampling) -> Generation:
        payload = {"model": self.model, "messages": _to_openai(conversation), "max_tokens": sampling.max_new_tokens,
                   "temperature": sampling.temperature if sampling.do_sample else 0.0}
        if sampling.do_sample and sampling.top_p < 1.0:
            payload["top_p"] = sampling.top_p
        start = time.perf_counter()
        data = self._post(payload)
        data = data if isinstance(data, dict) else {}
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            choice, text = {}, ""
        usage = data.get("usage") or {}
        return Generation(text.strip(), int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                          (time.perf_counter() - start) * 1000, truncated=choice.get("finish_reason") == "length")


def served_model(registry_name: str) -> str:
    """The model's name on its server, from the registry name of a model evaluated there (``model@URL``)."""
    return registry_name.split("@http", 1)[0]
