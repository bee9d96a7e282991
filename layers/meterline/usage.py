"""Token usage, normalised across providers.

`None` means the provider did not report a field; 0 means it reported zero. The classes are the
ones money is computed on: `input_uncached` + `cache_read` + `cache_write_5m` + `cache_write_1h`
is the whole prompt; `output` includes reasoning (reported apart in `reasoning` for information).

This module is pure: it parses provider payloads (dicts), it does no I/O and computes no money.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Iteration:
    """One extra sampling iteration billed beside the top-level usage (Anthropic `usage.iterations`:
    a compaction, billed at the request's model, or an advisor call, billed at the advisor's model)."""

    kind: str
    model: str | None
    usage: Usage


@dataclass(frozen=True)
class Usage:
    input_uncached: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    output: int = 0
    reasoning: int | None = None
    # Set when the counts are the gateway's estimate (stream cut before the provider's usage).
    estimated: bool = False
    # Audio input where a model prices it apart from text (disjoint from input_uncached / cache_read).
    input_audio: int = 0
    cache_read_audio: int = 0
    # Audio output where a model prices it apart from text (gpt-4o-audio, gpt-audio, Gemini native
    # audio): disjoint from `output`, so `output_total` is what the provider counted as output.
    output_audio: int = 0
    # Image tokens, at an image model's image rates (the image-generation tool's own usage, priced as
    # an iteration at the image model): disjoint from the text classes.
    input_image: int = 0
    cache_read_image: int = 0
    output_image: int = 0
    # OpenAI predicted-output tokens that were rejected: billed as output, and already inside `output`
    # (OpenAI counts them in completion_tokens), kept apart for the ledger only.
    rejected_prediction: int | None = None
    # Server-side tool calls billed per call: (("web_search", 3), ...), sorted by name.
    tool_calls: tuple[tuple[str, int], ...] = ()
    # Images made by a server-side image-generation tool, billed per image by model, quality and size:
    # (("gpt-image-1.5", "high", "1024x1536", 1), ...), sorted.
    images: tuple[tuple[str, str, str, int], ...] = ()
    # Set when the provider reported the image tool's token usage (priced as an iteration at the image
    # model's token rates): `images` then only counts the images, it is not priced per image again.
    images_in_tokens: bool = False
    # Billed iterations that the top-level counts leave out (Anthropic compaction / advisor).
    iterations: tuple[Iteration, ...] = ()
    # How the provider says it served the request: Anthropic `speed` ("fast") and `inference_geo`.
    speed: str | None = None
    inference_geo: str | None = None
    # Set when the provider's usage could not be taken as sent: "invalid" (a count that is not a
    # finite non-negative number: NaN, infinity, negative, a string) or "implausible" (beyond what the
    # request and the model allow); `claimed` then keeps what the provider sent, verbatim (JSON).
    flag: str | None = None
    claimed: str | None = None

    @property
    def prompt_total(self) -> int:
        return (self.input_uncached + self.cache_read + self.cache_write_5m + self.cache_write_1h
                + self.input_audio + self.cache_read_audio + self.input_image + self.cache_read_image)

    @property
    def output_total(self) -> int:
        return self.output + self.output_audio + self.output_image

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def total(self) -> int:
        return self.prompt_total + self.output_total

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def tool_count(self, name: str) -> int:
        return sum(n for k, n in self.tool_calls if k == name)


def tool_calls(counts: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((k, int(v)) for k, v in counts.items() if isinstance(v, int) and v > 0))


def _int(value: Any) -> int | None:
    """A token count, or None when absent or not a finite non-negative number (see `invalid_counts`)."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value) if value >= 0 else None


def invalid_counts(usage: Any, path: str = "") -> list[str]:
    """Fields of a provider's usage object that are not valid token counts (NaN, infinities - also
    what JSON's 1e309 parses to -, negatives, non-integral floats, strings where numbers belong)."""
    bad: list[str] = []
    stack: list[tuple[str, Any]] = [(path, usage)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(node))
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, float):
            if not math.isfinite(node) or node < 0 or node != int(node):
                bad.append(where)
        elif isinstance(node, int):
            if node < 0:
                bad.append(where)
        elif isinstance(node, str) and _looks_numeric(where):
            bad.append(where)
    return sorted(bad)


def _looks_numeric(field: str) -> bool:
    name = field.rsplit(".", 1)[-1].lower()
    return name.endswith(("tokens", "tokencount", "_count")) or name in ("inputtokens", "outputtokens")


def claim(usage: Any) -> str:
    """The provider's usage, verbatim as JSON (NaN and infinities kept as JS literals), size-bounded."""
    text = json.dumps(usage, separators=(",", ":"), default=str, allow_nan=True)
    return text if len(text) <= 2000 else text[:2000] + "..."


def checked(parse: Callable[[Any], Usage | None]) -> Callable[[Any], Usage | None]:
    """Wrap a provider usage parser: invalid counts are dropped by `_int`, and the result is flagged
    "invalid" with what the provider claimed, so the meter estimates instead of trusting it."""
    def wrapper(usage: Any) -> Usage | None:
        result = parse(usage)
        if not isinstance(usage, dict):
            return result
        bad = invalid_counts(usage)
        if not bad:
            return result
        return replace(result or Usage(), flag="invalid", claimed=claim(usage))
    wrapper.__name__ = parse.__name__
    wrapper.__doc__ = parse.__doc__
    return wrapper


@checked
def from_openai_chat(usage: dict[str, Any] | None) -> Usage | None:
    """OpenAI Chat Completions `usage`: prompt_tokens includes cached (and cache-write) tokens."""
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    if prompt is None and completion is None:
        return None
    prompt = prompt or 0
    details = usage.get("prompt_tokens_details") or {}
    if not isinstance(details, dict):
        details = {}
    cached = _int(details.get("cached_tokens")) or 0
    cache_write = _int(details.get("cache_write_tokens")) or 0
    # Guard against providers that report more cached than prompt tokens: never bill negative input.
    cached = min(cached, prompt)
    cache_write = min(cache_write, prompt - cached)
    # Audio prompt tokens (gpt-4o-audio, gpt-realtime) are priced apart where the model lists a price.
    audio = min(_int(details.get("audio_tokens")) or 0, prompt - cached - cache_write)
    out_details = usage.get("completion_tokens_details") or {}
    if not isinstance(out_details, dict):
        out_details = {}
    completion = completion or 0
    # Audio completion tokens (gpt-4o-audio, gpt-audio) are inside completion_tokens, priced apart.
    audio_out = min(_int(out_details.get("audio_tokens")) or 0, completion)
    return Usage(
        input_uncached=prompt - cached - cache_write - audio,
        cache_read=cached,
        cache_write_5m=cache_write,
        output=completion - audio_out,
        reasoning=_int(out_details.get("reasoning_tokens")),
        input_audio=audio,
        output_audio=audio_out,
        rejected_prediction=_int(out_details.get("rejected_prediction_tokens")),
    )


@checked
def from_openai_responses(usage: dict[str, Any] | None) -> Usage | None:
    """OpenAI Responses `usage`: input_tokens includes cached; output_tokens includes reasoning."""
    if not isinstance(usage, dict):
        return None
    return from_openai_chat({
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
        "prompt_tokens_details": usage.get("input_tokens_details") or {},
        "completion_tokens_details": usage.get("output_tokens_details") or {},
    })


@checked
def from_openai_embeddings(usage: dict[str, Any] | None) -> Usage | None:
    """OpenAI Embeddings `usage`: prompt_tokens only (embeddings produce no output tokens)."""
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("prompt_tokens"))
    if prompt is None:
        prompt = _int(usage.get("total_tokens"))
    return None if prompt is None else Usage(input_uncached=prompt)


@checked
def from_anthropic(usage: dict[str, Any] | None) -> Usage | None:
    """Anthropic Messages `usage`: input_tokens EXCLUDES cache reads and writes.

    Cache writes are split by TTL in `cache_creation.ephemeral_5m_input_tokens` /
    `ephemeral_1h_input_tokens`; without that split, `cache_creation_input_tokens` counts as 5m.
    A total larger than the split (older API versions) puts the remainder on 5m.
    """
    if not isinstance(usage, dict):
        return None
    input_ = _int(usage.get("input_tokens"))
    output = _int(usage.get("output_tokens"))
    if input_ is None and output is None:
        return None
    read = _int(usage.get("cache_read_input_tokens")) or 0
    total_write = _int(usage.get("cache_creation_input_tokens"))
    split = usage.get("cache_creation")
    write_5m = write_1h = None
    if isinstance(split, dict):
        write_5m = _int(split.get("ephemeral_5m_input_tokens"))
        write_1h = _int(split.get("ephemeral_1h_input_tokens"))
    if write_5m is None and write_1h is None:
        write_5m, write_1h = total_write or 0, 0
    else:
        write_5m, write_1h = write_5m or 0, write_1h or 0
        if total_write is not None and total_write > write_5m + write_1h:
            write_5m += total_write - write_5m - write_1h
    details = usage.get("output_tokens_details")
    thinking = _int(details.get("thinking_tokens")) if isinstance(details, dict) else None
    server = usage.get("server_tool_use")
    # Web search is billed per search; web fetch costs only its tokens.
    searches = (_int(server.get("web_search_requests")) or 0) if isinstance(server, dict) else 0
    return Usage(input_uncached=input_ or 0, cache_read=read, cache_write_5m=write_5m, cache_write_1h=write_1h,
                 output=output or 0, reasoning=thinking, tool_calls=tool_calls({"web_search": searches}),
                 iterations=_anthropic_iterations(usage.get("iterations")),
                 speed=_str(usage.get("speed")), inference_geo=_str(usage.get("inference_geo")))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# Iterations whose tokens the top-level usage already counts (the model's own sampling turns).
_COUNTED_ITERATIONS = ("message", "fallback_message")


def _anthropic_iterations(raw: Any) -> tuple[Iteration, ...]:
    """`usage.iterations` entries billed beside the top-level counts: `compaction` (the request's
    model) and `advisor_message` (the advisor's `model`); unknown types are billed too, not dropped."""
    if not isinstance(raw, list):
        return ()
    out = []
    for item in raw:
        if not isinstance(item, dict) or item.get("type") in _COUNTED_ITERATIONS:
            continue
        parsed = from_anthropic({k: v for k, v in item.items() if k != "iterations"})
        if parsed is not None:
            out.append(Iteration(str(item.get("type") or "unknown"), _str(item.get("model")), parsed))
    return tuple(out)


def merge_anthropic_stream(start: dict[str, Any] | None, delta: dict[str, Any] | None) -> Usage | None:
    """Streaming Anthropic usage: `message_start.message.usage` overlaid with the LAST
    `message_delta.usage` (cumulative). Fields the delta lacks (or sends as null) keep their start
    value. None until a `message_delta` arrived: before it, output is unknown (a cut stream)."""
    if not isinstance(delta, dict):
        return None
    merged = dict(start) if isinstance(start, dict) else {}
    merged.update({k: v for k, v in delta.items() if v is not None})
    # Iterations reported at message_start (a compaction before the reply) must survive a
    # message_delta whose own list leaves them out; entries present in both count once.
    first = start.get("iterations") if isinstance(start, dict) else None
    last = delta.get("iterations")
    if isinstance(first, list) and isinstance(last, list):
        merged["iterations"] = [i for i in first if i not in last] + last
    return from_anthropic(merged)


@checked
def from_gemini(meta: dict[str, Any] | None) -> Usage | None:
    """Gemini `usageMetadata`: promptTokenCount INCLUDES cachedContentTokenCount; output is
    candidates + thoughts (thoughts billed as output); tool-use prompt tokens are billed as input."""
    if not isinstance(meta, dict):
        return None
    prompt = _int(meta.get("promptTokenCount"))
    candidates = _int(meta.get("candidatesTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    if prompt is None and candidates is None and thoughts is None:
        return None
    prompt = prompt or 0
    cached = min(_int(meta.get("cachedContentTokenCount")) or 0, prompt)
    tool_prompt = _int(meta.get("toolUsePromptTokenCount")) or 0
    # Audio input is priced apart (2.5 Flash: $1.00/M, cached $0.10/M, vs $0.30 text).
    audio = min(_modality(meta.get("promptTokensDetails"), "AUDIO"), prompt)
    audio_cached = min(_modality(meta.get("cacheTokensDetails"), "AUDIO"), cached, audio)
    # Audio answers (native-audio / Live models) are priced apart where the model lists an audio
    # output price; a TTS model lists its audio price as `output`, which the fallback uses.
    audio_out = min(_modality(meta.get("candidatesTokensDetails"), "AUDIO"), candidates or 0)
    return Usage(input_uncached=prompt - cached - (audio - audio_cached) + tool_prompt,
                 cache_read=cached - audio_cached, output=(candidates or 0) - audio_out + (thoughts or 0),
                 reasoning=thoughts, input_audio=audio - audio_cached, cache_read_audio=audio_cached,
                 output_audio=audio_out)


def _modality(details: Any, modality: str) -> int:
    if not isinstance(details, list):
        return 0
    return sum(_int(d.get("tokenCount")) or 0 for d in details
               if isinstance(d, dict) and str(d.get("modality", "")).upper() == modality)


def gemini_tool_calls(candidates: Any) -> tuple[tuple[str, int], ...]:
    """Grounding with Google Search: one grounded prompt per answer that used it, and its queries
    (Gemini 2.x bills per grounded prompt, 3.x per search query; the catalog prices the right one)."""
    prompts = queries = 0
    for cand in candidates if isinstance(candidates, list) else ():
        meta = cand.get("groundingMetadata") if isinstance(cand, dict) else None
        if isinstance(meta, dict):
            found = meta.get("webSearchQueries")
            count = len(found) if isinstance(found, list) else 0
            if count or meta.get("groundingChunks"):
                prompts = 1
                queries += count
    return tool_calls({"grounded_prompt": prompts, "web_search": queries})


def openai_tool_calls(output: Any) -> tuple[tuple[str, int], ...]:
    """Responses API output items billed per call: web search and file search calls, code
    interpreter containers (billed per container, however many calls share it)."""
    counts = {"web_search": 0, "file_search": 0}
    containers: set[str] = set()
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "web_search_call":
            counts["web_search"] += 1
        elif kind == "file_search_call":
            counts["file_search"] += 1
        elif kind == "code_interpreter_call":
            containers.add(str(item.get("container_id") or item.get("id")))
    return tool_calls({**counts, "code_interpreter": len(containers)})


def openai_images(output: Any, tools: Any) -> tuple[tuple[str, str, str, int], ...]:
    """Images the Responses API's `image_generation` tool made, billed per image by image model,
    quality and size. The output item reports the quality and size it used; the image model (and any
    quality or size the item leaves out) come from the request's tool config. An image model the
    request did not name is "" (the provider's default, priced as a gap). Failed calls make no image."""
    config: dict[str, Any] = next((t for t in tools if isinstance(t, dict) and t.get("type") == "image_generation"),
                                  {}) if isinstance(tools, list) else {}
    counts: dict[tuple[str, str, str], int] = {}
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict) or item.get("type") != "image_generation_call" or item.get("status") == "failed":
            continue
        quality = _setting(item.get("quality"), config.get("quality"))
        size = _setting(item.get("size"), config.get("size"))
        key = (_str(config.get("model")) or "", quality, size)
        counts[key] = counts.get(key, 0) + 1
    return tuple(sorted((m, q, s, n) for (m, q, s), n in counts.items()))


def openai_tool_usage(tool_usage: Any, tools: Any) -> tuple[Iteration | None, int | None]:
    """The Responses API's `tool_usage` (usage reported by hosted tools, apart from `usage`):
    `image_gen` token counts as an `image_generation` iteration at the image model's rates (the tool
    config's `model`; "" when it names none), and `web_search.num_requests`, the billable searches
    (discounted searches and page opens excluded). (None, None) for what it does not report."""
    if not isinstance(tool_usage, dict):
        return None, None
    searches = tool_usage.get("web_search")
    billable = _int(searches.get("num_requests")) if isinstance(searches, dict) else None
    gen = tool_usage.get("image_gen")
    if not isinstance(gen, dict) or not (_int(gen.get("total_tokens")) or _int(gen.get("input_tokens"))
                                         or _int(gen.get("output_tokens"))):
        return None, billable
    config: dict[str, Any] = next((t for t in tools if isinstance(t, dict) and t.get("type") == "image_generation"),
                                  {}) if isinstance(tools, list) else {}
    input_ = _int(gen.get("input_tokens")) or 0
    details = gen.get("input_tokens_details") if isinstance(gen.get("input_tokens_details"), dict) else {}
    image_in = min(_int(details.get("image_tokens")) or 0, input_)
    text_in = input_ - image_in
    cached = gen.get("cached_tokens_details") if isinstance(gen.get("cached_tokens_details"), dict) else {}
    cached_image = min(_int(cached.get("cached_image_tokens")) or 0, image_in)
    # Without the split, cached tokens are taken as text (an omitted count means "unknown": none).
    cached_text = min(_int(cached.get("cached_text_tokens")) if cached else (_int(gen.get("cached_tokens")) or 0),
                      text_in) or 0
    output = _int(gen.get("output_tokens")) or 0
    out_details = gen.get("output_tokens_details") if isinstance(gen.get("output_tokens_details"), dict) else None
    # Without the split, every output token is an image token (the dearer class: never under-billed).
    text_out = min(_int(out_details.get("text_tokens")) or 0, output) if out_details else 0
    usage = Usage(input_uncached=text_in - cached_text, cache_read=cached_text, input_image=image_in - cached_image,
                  cache_read_image=cached_image, output=text_out, output_image=output - text_out)
    return Iteration("image_generation", _str(config.get("model")), usage), billable


def _setting(reported: Any, requested: Any) -> str:
    """What the provider says it used, else what the request asked for; "auto" when neither is known."""
    for value in (reported, requested):
        if isinstance(value, str) and value and value != "auto":
            return value.lower()
    return "auto"


@checked
def from_bedrock(usage: dict[str, Any] | None) -> Usage | None:
    """Bedrock Converse `usage`: inputTokens EXCLUDES cache reads and writes.

    Guard for a reported anomaly (some non-Anthropic models counted cache writes, or all cache
    tokens, inside inputTokens): `totalTokens` tells which convention a response used, since it is
    always the sum of everything billed. Writes split by TTL come from `cacheDetails[]`.
    """
    if not isinstance(usage, dict):
        return None
    input_ = _int(usage.get("inputTokens"))
    output = _int(usage.get("outputTokens"))
    if input_ is None and output is None:
        return None
    input_, output = input_ or 0, output or 0
    read = _int(usage.get("cacheReadInputTokens")) or 0
    write = _int(usage.get("cacheWriteInputTokens")) or 0
    total = _int(usage.get("totalTokens"))
    if total is not None and (read or write) and total != input_ + output + read + write:
        if write and total == input_ + output + read and input_ >= write:
            input_ -= write  # writes were inside inputTokens
        elif total == input_ + output and input_ >= read + write:
            input_ -= read + write  # all cache tokens were inside inputTokens
    write_1h = 0
    for detail in usage.get("cacheDetails") or []:
        if isinstance(detail, dict) and str(detail.get("ttl", "")).lower() in ("1h", "one_hour", "3600"):
            write_1h += _int(detail.get("inputTokens")) or 0
    write_1h = min(write_1h, write)
    return Usage(input_uncached=input_, cache_read=read, cache_write_5m=write - write_1h, cache_write_1h=write_1h,
                 output=output)


def estimate_tokens(text_chars: int) -> int:
    """The gateway's fallback estimate: ~4 characters per token, rounded up."""
    return (text_chars + 3) // 4


def estimate_chat_prompt_tokens(messages: Any) -> int:
    """Estimate prompt tokens of chat messages: content characters / 4 plus per-message framing."""
    if not isinstance(messages, list):
        return 0
    chars = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                chars += len(str(call.get("function", "")))
    # Chat framing: ~4 tokens per message plus 3 for the reply primer (OpenAI's documented overhead).
    return estimate_tokens(chars) + 4 * len(messages) + 3


def estimate_request_prompt_tokens(body: dict[str, Any] | None) -> int:
    """Estimate the prompt of any supported request body (chat, messages, responses, embeddings)."""
    body = body or {}
    if isinstance(body.get("messages"), list):
        extra = body.get("system")
        system = len(extra) if isinstance(extra, str) else len(str(extra)) if extra else 0
        return estimate_chat_prompt_tokens(body["messages"]) + estimate_tokens(system)
    value = body.get("input")
    if isinstance(value, str):
        return estimate_tokens(len(value))
    if isinstance(value, list):
        if all(isinstance(v, dict) for v in value):  # Responses input items
            return estimate_chat_prompt_tokens(value)
        return sum(estimate_tokens(len(str(v))) for v in value)  # embeddings inputs
    return 0
