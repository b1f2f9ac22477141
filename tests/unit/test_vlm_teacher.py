import json

import httpx
import pytest
from PIL import Image

from ivt_core.boxes import Box
from ivt_core.grounders.openai_grounder import EndpointError, OpenAIGrounder
from ivt_core.teachers.base import TeachContext
from ivt_core.teachers.vlm import VLMTeacher
from tests.fakes import ScriptedGrounder

IMG = Image.new("RGB", (200, 100), "white")


def _ctx():
    return TeachContext("s", "the cup", IMG, Box(0, 0, 50, 50), Box(100, 0, 150, 50), 1, 1)


def _conv():
    return [{"role": "user", "content": [{"type": "image", "image": IMG}, {"type": "text", "text": "hi"}]}]


def test_vlm_teacher_accepts_matching_box_and_flags_others():
    good = VLMTeacher(ScriptedGrounder(lambda t, s: 'The box is on the saucer; move it right. [500, 0, 750, 500]'))
    (out,) = good.write([_ctx()])
    assert out.flags == [] and out.reasoning.startswith("The box is on the saucer")
    (bad,) = VLMTeacher(ScriptedGrounder(lambda t, s: "Move it. [0, 0, 100, 100]")).write([_ctx()])
    assert bad.flags == ["teacher_box_mismatch"]
    (junk,) = VLMTeacher(ScriptedGrounder(lambda t, s: "I was given the ground truth, so...")).write([_ctx()])
    assert set(junk.flags) == {"teacher_unparsable", "mentions_hint"}


def test_vlm_teacher_prompt_carries_the_target_in_model_units():
    grounder = ScriptedGrounder(lambda t, s: "[500, 0, 750, 500]")
    VLMTeacher(grounder).write([_ctx()])
    text = grounder.calls[0][0][0]["content"][1]["text"]
    assert "[500, 0, 750, 500]" in text and "the cup" in text


def _grounder(handler, **kw):
    return OpenAIGrounder("http://server/v1", "qwen", "qwen3_vl", transport=httpx.MockTransport(handler),
                          backoff_s=0.0, **kw)


def _ok(text):
    return httpx.Response(200, json={"choices": [{"message": {"content": text}}],
                                     "usage": {"prompt_tokens": 7, "completion_tokens": 3}})


def test_openai_grounder_sends_images_and_reads_answers():
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return _ok('{"bbox_2d": [1, 2, 3, 4]}')

    (answer,) = _grounder(handler).predict([_conv()])
    assert answer.text == '{"bbox_2d": [1, 2, 3, 4]}' and answer.tokens_in == 7
    part = seen[0]["messages"][0]["content"][0]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")


def test_openai_grounder_retries_server_errors_then_succeeds():
    replies = iter([httpx.Response(503), httpx.Response(429), _ok("fine")])
    assert _grounder(lambda r: next(replies)).predict([_conv()])[0].text == "fine"


def test_openai_grounder_clear_errors():
    with pytest.raises(EndpointError, match="refused the request: HTTP 404"):
        _grounder(lambda r: httpx.Response(404, text="no such model")).predict([_conv()])

    def timeout(request):
        raise httpx.ReadTimeout("slow")

    with pytest.raises(EndpointError, match="cannot reach .* gave up after 2 tries"):
        _grounder(timeout, retries=1).predict([_conv()])
    with pytest.raises(Exception, match="http"):
        OpenAIGrounder("server:8000", "m")
