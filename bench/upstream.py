"""A minimal fast fake OpenAI upstream for the benchmark (its own process, so its CPU is not
counted as the gateway's). Answers chat completions with realistic usage, streaming or not."""

from __future__ import annotations

import json
import sys

import uvicorn

USAGE = {"prompt_tokens": 1200, "completion_tokens": 10, "total_tokens": 1210,
         "prompt_tokens_details": {"cached_tokens": 1024}, "completion_tokens_details": {"reasoning_tokens": 0}}
BODY = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"},
                                "finish_reason": "stop"}], "usage": USAGE}).encode()
CHUNKS = [b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini",
                                  "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}).encode()
          + b"\n\n" for w in ["Hello", " there", "!"] * 4]
USAGE_CHUNK = b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0,
                                      "model": "gpt-4o-mini", "choices": [], "usage": USAGE}).encode() + b"\n\n"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    stream = b'"stream":true' in body or b'"stream": true' in body
    if not stream:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": BODY})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for chunk in CHUNKS:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": USAGE_CHUNK + b"data: [DONE]\n\n"})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False)
