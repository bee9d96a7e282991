"""No byte of a provider key reaches a client (issue 14, item 5), whatever the upstream echoes it in:
response headers, a 200 body, a stream event (a provider error event inside a 200 stream), an error
body over the read cap (the 500-character fallback), JSON-escaped (`\\/`, `\\u0073...`) or cut to a
prefix. Checked on everything the client receives, after undoing JSON escapes."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from meterline.redaction import redact, redact_bytes
from tests.conftest import make_tenant
from tests.servers import ServerThread

SECRET = "gsk_live/AbCdEf0123456789xyzXYZ/9876543210qrstuv"
ESCAPED = {"plain": SECRET, "slash": SECRET.replace("/", "\\/"),
           "unicode": "".join(f"\\u{ord(c):04x}" for c in SECRET),
           "UNICODE": "".join(f"\\u{ord(c):04X}" for c in SECRET)}


def leaked(text: str) -> list[str]:
    """Every 8-character piece of the secret found in `text` once JSON escapes are undone."""
    plain = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text.replace("\\/", "/"))
    return [SECRET[i:i + 8] for i in range(len(SECRET) - 7) if SECRET[i:i + 8] in plain]


def leaky_app(mode: str, form: str) -> Starlette:
    shown = ESCAPED[form]

    async def chat(request: Request) -> Response:
        body = await request.json()
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        headers = {"x-request-id": SECRET, "openai-processing-ms": f"12 {SECRET}"}
        if mode == "big_error":
            text = '{"error":{"message":"Incorrect API key provided: ' + shown + '","pad":"' + "x" * 70_000 + '"}}'
            return Response(text, status_code=401, media_type="application/json", headers=headers)
        if mode == "prefix_error":
            text = "upstream auth failure " * 20 + SECRET[:20]
            return Response(text, status_code=401, media_type="text/plain", headers=headers)
        if not body.get("stream"):
            text = ('{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,'
                    '"message":{"role":"assistant","content":"your key is ' + shown + '"},"finish_reason":"stop"}],'
                    '"usage":' + json.dumps(usage) + "}")
            return Response(text, media_type="application/json", headers=headers)

        async def events():
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                     "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            yield ('data: {"error":{"message":"key ' + shown + ' was revoked","type":"invalid_request_error"}}'
                   "\n\n").encode()
            yield ('data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],'
                   '"usage":' + json.dumps(usage) + "}\n\n").encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.mark.parametrize("form", sorted(ESCAPED))
@pytest.mark.parametrize("mode", ["body", "stream", "big_error", "prefix_error"])
def test_no_key_byte_reaches_the_client(gateway, settings, mode, form):
    if mode == "prefix_error" and form != "plain":
        pytest.skip("the prefix case has one form")
    with ServerThread(leaky_app(mode, form)) as upstream:
        t = make_tenant(settings, upstream.url + "/v1", provider_secret=SECRET)
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                "stream": mode == "stream"}
        with httpx.Client(timeout=30) as http:
            response = http.post(gateway.base_url + "/chat/completions", json=body,
                                 headers={"authorization": f"Bearer {t.api_key}"})
    assert response.headers["meterline-request-id"]
    assert response.status_code == (401 if mode.endswith("error") else 200)
    everything = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    assert leaked(everything) == [], everything[:2000]
    if mode in ("body", "stream"):
        assert "[redacted]" in response.text


def test_redaction_is_one_function_for_text_and_bytes():
    samples = [f"a {v} b" for v in ESCAPED.values()] + [
        "cut: " + SECRET[:20], "mid: " + SECRET[10:40], "tail " + SECRET[-9:], "other sk-abcdefgh1234 AIza" + "x" * 30,
    ]
    for sample in samples:
        out = redact(sample, SECRET)
        assert out == redact_bytes(sample.encode(), SECRET).decode()
        assert leaked(out) == [] and "sk-abcdefgh" not in out and "AIzax" not in out, out
    assert redact("nothing to see", SECRET) == "nothing to see"
