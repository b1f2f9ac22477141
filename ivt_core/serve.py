"""``ivt serve MODEL``: a local checkpoint behind an OpenAI-compatible chat endpoint.

``POST /v1/chat/completions`` (images as base64 data URLs, as the OpenAI grounder and the OpenAI API send them),
``GET /v1/models`` (which also says the model's family and box convention, so a client needs no ``--coords``),
``GET /health``. Requests that arrive together are answered together: a batcher thread takes the first waiting
request, lets others join for ``batch_wait_ms`` (up to ``max_batch``), and runs them as one batch on the cached
engine (its batched prefill and graph-replayed decode; each request a fresh row, released after its answer) or
on ``generate`` for models the engine does not run. Greedy answers are the in-process loop's (tested).

Not here: streaming, ``n`` > 1, tools, logprobs (refused with a message). Prefix caching across requests is not
kept: each request is encoded whole (for many long conversations, vLLM or SGLang behind the same grounder).

Why FastAPI and uvicorn: they come with gradio, and this is what they are for; the OpenAI request format is
checked here by hand so that every mistake gets a message that says what to fix, in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import itertools
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future

from fastapi import FastAPI, Request  # at module level: FastAPI reads the handlers' annotations from here
from fastapi.responses import JSONResponse

from ivt_core import logs
from ivt_core.errors import InvalidInputError
from ivt_core.grounders.base import Generation, Sampling
from ivt_core.limits import MAX_IMAGE_PIXELS

MAX_BODY_BYTES = 64 * 1024 * 1024  # three 4k PNGs as base64 fit many times over
MAX_MESSAGES = 256
log = logs.get(__name__)


class RequestError(ValueError):
    """A request the server refuses: ``status`` and a message that says what to fix."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.code = status, code


# ---- the request, checked ----

def decode_image(url: str):
    """A PIL image from a ``data:image/...;base64,...`` URL. Raises RequestError saying what is wrong."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(url, str) or not url.startswith("data:image/"):
        raise RequestError("image_url.url must be a data URL (data:image/png;base64,...); this server fetches no "
                           "remote images")
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise RequestError("image_url.url must be base64-encoded (data:image/png;base64,...)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("image_url.url holds invalid base64") from None
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.width * probe.height > MAX_IMAGE_PIXELS:
                raise RequestError(f"an image of {probe.width}x{probe.height} pixels is more than the "
                                   f"{MAX_IMAGE_PIXELS:,} accepted; send it smaller")
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise RequestError("an image_url holds no image this server can read; send a PNG or JPEG") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise RequestError(f"an image could not be read ({exc}); send a PNG or JPEG") from None
    return image.convert("RGB") if image.mode != "RGB" else image


def to_conversation(messages) -> list[dict]:
    """OpenAI chat messages -> the loop's conversation (transformers' chat format with PIL images)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise RequestError(f"{len(messages)} messages are more than the {MAX_MESSAGES} accepted")
    conversation = []
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise RequestError(f"messages[{number}] needs a role of system, user or assistant")
        content = message.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        elif isinstance(content, list):
            parts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    parts.append({"type": "text", "text": part["text"]})
                elif kind == "image_url" and isinstance(part.get("image_url"), dict):
                    parts.append({"type": "image", "image": decode_image(part["image_url"].get("url"))})
                else:
                    raise RequestError(f"messages[{number}] has a content part that is neither text nor image_url")
        else:
            raise RequestError(f"messages[{number}].content must be a string or a list of parts")
        conversation.append({"role": message["role"], "content": parts})
    if conversation[-1]["role"] != "user":
        raise RequestError("the last message must be the user's (the model answers it)")
    return conversation


def to_sampling(body: dict, limit: int) -> Sampling:
    """The decoding settings of a request: temperature 0 (the default here) is greedy."""
    for name in ("stream", "tools", "logprobs"):
        if body.get(name):
            raise RequestError(f"{name} is not supported by ivt serve")
    if body.get("n", 1) != 1:
        raise RequestError("n must be 1 (one answer per request)")
    tokens = body.get("max_completion_tokens", body.get("max_tokens", 256))
    if not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens <= limit:
        raise RequestError(f"max_tokens must be a whole number from 1 to {limit}, got {tokens!r}")
    temperature, top_p = body.get("temperature", 0.0), body.get("top_p", 1.0)
    for name, value, low, high in (("temperature", temperature, 0.0, 2.0), ("top_p", top_p, 0.0, 1.0)):
        if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
            raise RequestError(f"{name} must be a number from {low} to {high}, got {value!r}")
    if temperature == 0:
        return Sampling(max_new_tokens=tokens)
    return Sampling(max_new_tokens=tokens, do_sample=True, temperature=float(temperature), top_p=float(top_p) or 1.0)


# ---- batching ----

class Batcher:
    """Answers submitted conversations in batches on one thread (the model is not shared between threads)."""

    def __init__(self, answer, max_batch: int = 64, wait_s: float = 0.005):
        self._answer = answer  # (conversations, sampling) -> list[Generation]
        self.max_batch, self.wait_s = max_batch, wait_s
        self._queue: queue.Queue = queue.Queue()
        self.batches: list[int] = []  # the size of each batch run (the tests read it; the log reports it)
        threading.Thread(target=self._run, name="ivt-serve-batcher", daemon=True).start()

    def submit(self, conversation: list[dict], sampling: Sampling) -> Future:
        future: Future = Future()
        self._queue.put((conversation, sampling, future))
        return future

    def _take(self) -> list:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            groups: dict[Sampling, list] = {}
            for item in batch:
                groups.setdefault(item[1], []).append(item)
            for sampling, items in groups.items():
                self.batches.append(len(items))
                started = time.perf_counter()
                try:
                    answers = self._answer([conversation for conversation, _, _ in items], sampling)
                    log.info("answered %d request(s) together in %.0f ms (%d waiting)", len(items),
                             1000 * (time.perf_counter() - started), self._queue.qsize())
                except Exception as exc:  # noqa: BLE001 - every waiting client gets the error, the server goes on
                    log.exception("a batch of %d requests failed", len(items))
                    for _, _, future in items:
                        future.set_exception(exc)
                    continue
                for (_, _, future), answer in zip(items, answers, strict=True):
                    future.set_result(answer)


def engine_answerer(grounder, engine: str = "auto"):
    """(conversations, sampling) -> answers: the cached engine's batched step where it runs the model (each
    request a fresh row, released after), else the grounder's own ``predict``."""
    from ivt_core.grounders.engine import CachedEngine
    from ivt_core.loop import LoopConfig, engine_for

    if engine_for(grounder, LoopConfig(engine=engine)) == "plain":
        return grounder.predict
    cached = CachedEngine(grounder.model, grounder.processor, grounder.device)
    keys = itertools.count()

    def answer(conversations: list[list[dict]], sampling: Sampling) -> list[Generation]:
        requests = [(next(keys), conversation) for conversation in conversations]
        try:
            return cached.step(requests, sampling)
        finally:
            for key, _ in requests:
                cached.release(key)

    return answer


# ---- the HTTP side ----

def build_app(batcher: Batcher, name: str, family, api_key: str = "", max_tokens: int = 4096):
    """The FastAPI application serving ``batcher``'s model as ``name``."""
    app = FastAPI(title="ivt serve", docs_url=None, redoc_url=None, openapi_url=None)

    def error(status: int, message: str, code: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": code, "code": code}}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if api_key and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return error(401, "missing or wrong API key (Authorization: Bearer KEY)", "authentication_error")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return error(413, f"the request is larger than {MAX_BODY_BYTES // 2**20} MiB")
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ivt",
                                            "ivt_family": family.name, "ivt_coords": family.convention}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return error(400, "the request body must be a JSON object")
        if body.get("model") not in (None, "", name):
            return error(404, f"no model {body.get('model')!r} here; this server serves {name!r}",
                         "model_not_found")
        try:
            sampling = to_sampling(body, max_tokens)
            conversation = await asyncio.to_thread(to_conversation, body.get("messages"))
        except RequestError as exc:
            return error(exc.status, str(exc), exc.code)
        try:
            answer = await asyncio.wrap_future(batcher.submit(conversation, sampling))
        except Exception as exc:  # noqa: BLE001 - the model failed on this batch: say so, stay up
            return error(500, f"the model failed on this request: {type(exc).__name__}: {exc}", "server_error")
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                             "finish_reason": "length" if answer.truncated else "stop"}],
                "usage": {"prompt_tokens": answer.tokens_in, "completion_tokens": answer.tokens_out,
                          "total_tokens": answer.tokens_in + answer.tokens_out}}

    return app


def check_port(host: str, port: int) -> None:
    """Raise InvalidInputError if ``host:port`` cannot be bound (before minutes of model loading, not after)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InvalidInputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port "
                                    "or --host") from None


def build_server(config):
    """Check the address, load the model; returns the uvicorn server (not started), its batcher and the
    line that announces it."""
    import uvicorn

    from ivt_core.bootstrap import toy_model_path
    from ivt_core.grounders.transformers_grounder import TransformersGrounder

    check_port(config.host, config.port)
    model = config.model or str(toy_model_path())
    grounder = TransformersGrounder.load(model, config.adapter or None, config.load_in_4bit, config.device,
                                         config.coords or None)
    name = config.served_name or grounder.name
    batcher = Batcher(engine_answerer(grounder, config.engine), config.max_batch, config.batch_wait_ms / 1000)
    app = build_app(batcher, name, grounder.family, config.api_key, config.max_tokens_limit)
    verbose = log.isEnabledFor(logging.INFO)  # `ivt -v serve`: uvicorn's access log and one line per batch
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port,
                                           log_level="info" if verbose else "warning", access_log=verbose,
                                           limit_concurrency=4 * config.max_batch + 16))
    host = f"[{config.host}]" if ":" in config.host else config.host
    line = (f"serving {name} ({grounder.family.name}, {grounder.device}) at http://{host}:{config.port}/v1 "
            "- OpenAI-compatible chat completions; Ctrl-C stops")
    return server, batcher, line


def serve(config, announce=print) -> None:
    """Serve until interrupted (Ctrl-C, SIGTERM)."""
    server, _, line = build_server(config)
    announce(line)
    server.run()
