"""A streamed answer, as the client saw it, back into the endpoint's non-streamed answer. Pure.

The gateway taps the bytes it sends to the client (whatever provider produced them, they are in the
endpoint's own dialect), so one collector per endpoint covers every provider:
    chat.completions  chunks -> chat.completion (content, reasoning_content, tool calls, finish reason)
    responses         the terminal `response.completed` event carries the whole response
    messages          message_start + content blocks (text, tool_use, thinking) + message_delta
A stream that never completed yields None (nothing is stored).
"""

from __future__ import annotations

import json
from typing import Any

from meterline.sse import SSEParser
from meterline.translators.openai_format import usage_dict
from meterline.usage import Usage


class Collector:
    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self._parser = SSEParser()
        self._broken = False
        # chat.completions
        self._chunk_meta: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] | None = None
        # responses
        self._response: dict[str, Any] | None = None
        # messages
        self._message: dict[str, Any] | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._partial_json: dict[int, str] = {}
        self._stopped = False

    def feed(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            for event in self._parser.feed(data):
                if event.data is None or event.data.strip() == "[DONE]":
                    continue
                payload = json.loads(event.data)
                if isinstance(payload, dict):
                    self._on(event.event or payload.get("type"), payload)
        except (ValueError, TypeError, KeyError, AttributeError):
            self._broken = True  # never store what could not be followed exactly

    def _on(self, kind: str | None, payload: dict[str, Any]) -> None:
        if self.endpoint == "chat.completions":
            self._chat(payload)
        elif self.endpoint == "responses":
            if kind == "response.completed":
                self._response = payload["response"]
        elif self.endpoint == "messages":
            self._messages(kind, payload)

    # -- chat.completions --------------------------------------------------------------------------
    def _chat(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            self._broken = True
            return
        for name in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if chunk.get(name) is not None:
                self._chunk_meta[name] = chunk[name]
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            state = self._choices.setdefault(int(choice.get("index", 0)), {
                "role": "assistant", "content": [], "reasoning": [], "tools": {}, "finish": None, "refusal": []})
            delta = choice.get("delta") or {}
            if delta.get("role"):
                state["role"] = delta["role"]
            if delta.get("content"):
                state["content"].append(delta["content"])
            if delta.get("reasoning_content"):
                state["reasoning"].append(delta["reasoning_content"])
            if delta.get("refusal"):
                state["refusal"].append(delta["refusal"])
            for call in delta.get("tool_calls") or []:
                slot = state["tools"].setdefault(int(call.get("index", 0)),
                                                 {"id": None, "type": "function", "name": "", "arguments": []})
                if call.get("id"):
                    slot["id"] = call["id"]
                fn = call.get("function") or {}
                if fn.get("name"):
                    slot["name"] += fn["name"]
                if fn.get("arguments"):
                    slot["arguments"].append(fn["arguments"])
            if choice.get("finish_reason"):
                state["finish"] = choice["finish_reason"]

    def _chat_result(self, usage: Usage | None) -> dict[str, Any] | None:
        if not self._choices or not self._chunk_meta.get("id"):
            return None
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: dict[str, Any] = {"role": state["role"],
                                       "content": "".join(state["content"]) or (None if state["tools"] else ""),
                                       "refusal": "".join(state["refusal"]) or None}
            if state["reasoning"]:
                message["reasoning_content"] = "".join(state["reasoning"])
            if state["tools"]:
                message["tool_calls"] = [
                    {"id": t["id"], "type": t["type"], "function": {"name": t["name"],
                                                                     "arguments": "".join(t["arguments"])}}
                    for _, t in sorted(state["tools"].items())]
            choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": state["finish"]})
        out: dict[str, Any] = {"id": self._chunk_meta["id"], "object": "chat.completion",
                               "created": self._chunk_meta.get("created", 0), "model": self._chunk_meta.get("model"),
                               "choices": choices}
        for name in ("system_fingerprint", "service_tier"):
            if name in self._chunk_meta:
                out[name] = self._chunk_meta[name]
        if self._usage is not None:
            out["usage"] = self._usage
        elif usage is not None:
            out["usage"] = usage_dict(usage)
        return out

    # -- messages ----------------------------------------------------------------------------------
    def _messages(self, kind: str | None, payload: dict[str, Any]) -> None:
        if kind == "message_start":
            self._message = dict(payload["message"])
        elif kind == "content_block_start":
            self._blocks[int(payload["index"])] = dict(payload["content_block"])
        elif kind == "content_block_delta":
            index, delta = int(payload["index"]), payload["delta"]
            block = self._blocks[index]
            dtype = delta.get("type")
            if dtype == "text_delta":
                block["text"] = block.get("text", "") + delta["text"]
            elif dtype == "input_json_delta":
                self._partial_json[index] = self._partial_json.get(index, "") + delta.get("partial_json", "")
            elif dtype == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta["thinking"]
            elif dtype == "signature_delta":
                block["signature"] = delta["signature"]
            elif dtype == "citations_delta":
                block.setdefault("citations", []).append(delta["citation"])
            else:
                self._broken = True  # a delta we cannot reassemble exactly: do not store
        elif kind == "content_block_stop":
            index = int(payload["index"])
            if index in self._partial_json:
                text = self._partial_json.pop(index)
                self._blocks[index]["input"] = json.loads(text) if text else {}
        elif kind == "message_delta" and self._message is not None:
            delta = payload.get("delta") or {}
            for name in ("stop_reason", "stop_sequence"):
                if name in delta:
                    self._message[name] = delta[name]
            if isinstance(payload.get("usage"), dict):
                self._message["usage"] = {**(self._message.get("usage") or {}), **payload["usage"]}
        elif kind == "message_stop":
            self._stopped = True
        elif kind == "error":
            self._broken = True

    def _messages_result(self) -> dict[str, Any] | None:
        if self._message is None or self._partial_json:
            return None
        out = dict(self._message)
        out["content"] = [self._blocks[i] for i in sorted(self._blocks)]
        return out

    def result(self, usage: Usage | None = None) -> dict[str, Any] | None:
        """The non-streamed answer, or None if the stream was not followed to a usable end."""
        if self._broken or self._parser.pending().strip():
            return None
        if self.endpoint == "chat.completions":
            return self._chat_result(usage)
        if self.endpoint == "responses":
            return self._response
        if self.endpoint == "messages":
            return self._messages_result() if self._stopped else None
        return None
