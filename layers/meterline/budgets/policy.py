"""Budget and rate-limit decisions. Pure: no I/O, no clocks (times are passed in).

Money bound: a reservation is the request's worst case - estimated input at the highest input-class
rate the model has (uncached, cache write 5m/1h; every tier and service tier) plus its maximum output
at the highest output rate, times the number of completions requested (`n`, `best_of`).

Input is estimated from the WHOLE serialized request body, whatever the endpoint: every field a
provider may bill as input (chat `messages`/`tools`/`functions`/`response_format`, Responses
`instructions`/`input`/`tools`/`text`, Anthropic `system`/`tools`, ...) is inside it, and fields that
are not billed only make the estimate larger. The count is the body's UTF-8 bytes: byte-level BPE
tokenizers (OpenAI's o200k/cl100k, Anthropic's, Gemini's SentencePiece with byte fallback) never
emit a token of less than one byte, so this is a bound, not an estimate - whatever the script or an
adversarial tokenization. Images add IMAGE_BOUND tokens each. tests/unit/test_reservation.py checks
the bound against an independent tokenizer on English, code, JSON, CJK, emoji and accented text.

Inputs the gateway cannot see cannot be bounded: `previous_response_id`, `conversation` and stored
`prompt` templates (Responses) bring server-side context of unknown size, and file/document parts
(PDF pages are billed as text plus images); so is a Responses `image_generation` tool without
`max_tool_calls` (the model may make any number of images, each billed per image). A request using
them is refused with 400 `unbounded_input` when a hard (reject) budget applies to it (see
`unbounded_fields`). With `max_tool_calls`, that many images at the highest listed per-image price
join the reservation; an audio reply is reserved at the model's audio output rate.
Output can never exceed the reserved maximum (the provider stops at max_tokens per completion), so
a request settles above its reservation only when the input estimate is beaten.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meterline import jsonc
from meterline.budgets.model import Budget, Enforcement, RateLimit
from meterline.pricing.catalog import ModelPricing, Rates
from meterline.pricing.cost import UNLISTED_IMAGE_MICROS

PER_MILLION = 1_000_000
MIN_CLAMPED_OUTPUT = 16  # below this a clamped request is useless: reject instead


def matching_budgets(enforcement: Enforcement, attribution: Mapping[str, str | None]) -> list[Budget]:
    """Every budget whose scope covers the request (all of them must pass)."""
    out = []
    for budget in enforcement.budgets:
        if budget.scope_type == "workspace" or attribution.get(budget.scope_type) == budget.scope_value:
            out.append(budget)
    return out


def limits_for(enforcement: Enforcement, attribution: Mapping[str, str | None]) -> list[RateLimit]:
    """The rate limits that apply: explicit per subject, else the workspace default per type; every
    key has the workspace's default RPM floor unless a limit for it (or for `key:*`) is set."""
    out = []
    for subject_type in ("key", "member", "agent"):
        value = attribution.get(subject_type)
        if not value:
            continue
        limit = enforcement.limits.get(f"{subject_type}:{value}") or enforcement.limits.get(f"{subject_type}:*")
        if limit is None and subject_type == "key":
            limit = RateLimit("key", "*", rpm=enforcement.policy.key_rpm_default)
        if limit is not None:
            out.append(RateLimit(subject_type, value, limit.rpm, limit.rph, limit.burst, limit.tpm))
    return out


def rate_retry_after(limit: RateLimit, state: Mapping[str, Any], tokens: int, now: float) -> float:
    """Seconds until the window that refused the request admits it again: the hour window, else the
    minute window when its request or token count is full, else the second (burst) window."""
    if state.get("hour_limited"):
        return 3600 - now % 3600
    minute_full = (limit.rpm is not None and int(state.get("n", 0)) >= limit.rpm) or (
        limit.tpm is not None and int(state.get("tk", 0)) + tokens > limit.tpm)
    if limit.burst is not None and not minute_full:
        return 1 - now % 1
    return 60 - now % 60


def requested_tier(body: Mapping[str, Any]) -> str | None:
    """The service tier a request asks for, in any dialect (OpenAI / Anthropic `service_tier`,
    Gemini `serviceTier`, Bedrock `serviceTier.type`)."""
    value = body.get("service_tier", body.get("serviceTier"))
    if isinstance(value, Mapping):
        value = value.get("type")
    return value if isinstance(value, str) else None


def worst_rates(pricing: ModelPricing, point_index: int = -1,
                body: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """(highest input-class rate, highest output rate) across the long-context tiers of the table
    the request can be billed at: the standard one, and the service tier / speed / region it asks for."""
    point = pricing.points[point_index]
    body = body or {}
    tables = [point.table]
    tier = (requested_tier(body) or "").lower()
    if tier in point.service_tiers:
        tables.append(point.service_tiers[tier])
    speed = body.get("speed")
    if isinstance(speed, str) and speed.lower() in point.speed:
        tables.append(point.speed[speed.lower()])
    rate_sets: list[Rates] = [r for t in tables for r in t.all_rates()]
    geo = body.get("inference_geo")
    if isinstance(geo, str) and geo.lower() in point.geo:
        rate_sets = [r.scaled(point.geo[geo.lower()]) for r in rate_sets]
    worst_in = max(max(r.input, r.cache_write_5m, r.cache_write_1h, r.cache_read, r.audio_in) for r in rate_sets)
    worst_out = max(max(r.output, r.audio_out) for r in rate_sets)  # an audio reply bills audio rates
    return worst_in, worst_out


# Media parts are billed by their pixels, not their bytes. An image costs at most IMAGE_BOUND tokens
# on every model we price (OpenAI high detail <= 1,445 tiles-tokens, patch models <= 1,536 patches x
# 2.46, Anthropic <= ~1,600, Gemini <= 258 per 768px tile), except gpt-4o-mini, which counts an image
# in 33x more (cheaper) tokens: <= 2,833 + 8 x 5,667.
IMAGE_BOUND = 6_000
IMAGE_BOUND_BY_MODEL = (("gpt-4o-mini", 48_200),)
_IMAGE_TYPES = frozenset({"image_url", "input_image", "image"})
# File and document parts (PDFs: every page billed as text plus an image) have no size bound the
# gateway can see; a plain-text document is bounded like any text.
_FILE_TYPES = frozenset({"file", "input_file", "document"})
# Fields whose input the gateway cannot see: server-side state the provider adds to the prompt.
UNBOUNDED_INPUT_FIELDS = ("previous_response_id", "conversation", "prompt")


def media_parts(body: Mapping[str, Any]) -> tuple[int, bool]:
    """(number of image parts, whether any file/document part is present), walked iteratively."""
    images, files = 0, False
    stack: list[Any] = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            if kind in _IMAGE_TYPES:
                images += 1
            elif kind in _FILE_TYPES:
                source = node.get("source")
                files = files or not (isinstance(source, dict) and source.get("type") == "text")
            stack.extend(v for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))
    return images, files


def estimate_input_tokens(body: Mapping[str, Any], media: tuple[int, bool] | None = None) -> int:
    """An upper bound of the request's prompt tokens: every UTF-8 byte of the whole serialized
    request (a byte-level BPE token is at least one byte), plus IMAGE_BOUND per image part.
    `media`: `media_parts(body)` when already walked."""
    size = len(jsonc.dumps(body, default=str))
    images, _ = media if media is not None else media_parts(body)
    model = str(body.get("model", ""))
    per_image = next((bound for name, bound in IMAGE_BOUND_BY_MODEL if name in model), IMAGE_BOUND)
    return size + images * per_image


def typical_input_tokens(bound: int) -> int:
    """What rate limits count (OpenAI's TPM counts ~4 characters per token, not a worst case)."""
    return (bound + 3) // 4


def unbounded_fields(body: Mapping[str, Any], endpoint: str, media: tuple[int, bool] | None = None) -> list[str]:
    """The request's inputs of unknown size: Responses server-side state, and file/document parts.
    `media`: `media_parts(body)` when already walked."""
    found = []
    if endpoint == "responses":
        found = [name for name in UNBOUNDED_INPUT_FIELDS if body.get(name) not in (None, "", {}, [])]
    if (media if media is not None else media_parts(body))[1]:
        found.append("file")
    if image_tool(body) is not None and max_tool_calls(body) is None:
        found.append("max_tool_calls")  # missing: the number of images is unbounded
    return found


def image_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None
    return next((t for t in tools if isinstance(t, Mapping) and t.get("type") == "image_generation"), None)


def max_tool_calls(body: Mapping[str, Any]) -> int | None:
    return _positive(body.get("max_tool_calls"))


def image_fee_bound(body: Mapping[str, Any]) -> int:
    """Micro-dollars the request's image-generation tool can bill at most: `max_tool_calls` images
    (built-in tool calls are capped by it) at the highest per-image price the catalog lists."""
    if image_tool(body) is None:
        return 0
    return (max_tool_calls(body) or 1) * UNLISTED_IMAGE_MICROS


# Usage plausibility (gateway/metering.py): what a provider may report for a request at most.
# Input: the request's own bound plus room for prompts the provider injects (tool-use system prompts,
# chat framing); with server-side state or server-side tools (search, file search, code execution:
# their results are billed as input), no more than the largest context of any model, per step, for
# a generous number of steps.
INJECTED_PROMPT_SLACK = 8_192
MAX_SERVER_SIDE_INPUT = 50_000_000
# Output when the request names no maximum: the catalog's maximum, but never below this (a catalog
# entry older than a model's raised limit must not turn honest usage into "implausible").
MIN_MODEL_MAX_OUTPUT = 131_072


def _server_side_tools(body: Mapping[str, Any]) -> bool:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return False
    # Client tools are "function" (OpenAI), "custom", or Anthropic tools with an input_schema.
    return any(isinstance(t, dict) and t.get("type") not in (None, "function", "custom") and "input_schema" not in t
               for t in tools)


def usage_limits(body: Mapping[str, Any], endpoint: str, pricing: ModelPricing | None,
                 input_bound: int | None = None) -> tuple[int, int]:
    """(max prompt tokens, max output tokens) a provider can truthfully bill for this request;
    `input_bound` is `estimate_input_tokens(body)` when already computed."""
    if unbounded_fields(body, endpoint) or _server_side_tools(body):
        max_input = MAX_SERVER_SIDE_INPUT
    else:
        max_input = (input_bound if input_bound is not None else estimate_input_tokens(body)) + INJECTED_PROMPT_SLACK
    if endpoint == "embeddings":
        return max_input, 0
    per_choice = requested_max_output(body) or max((pricing.max_output_tokens if pricing else 0) or 0,
                                                   MIN_MODEL_MAX_OUTPUT)
    return max_input, per_choice * completions(body)


def _positive(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def requested_max_output(body: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = _positive(body.get(name))
        if value is not None:
            return value
    return None


def completions(body: Mapping[str, Any]) -> int:
    """How many completions the provider generates (and bills output for): chat `n`, legacy
    `best_of` (generated server-side, all billed), Gemini-style `candidate_count`."""
    counts = [_positive(body.get(name)) for name in ("n", "best_of", "candidate_count", "candidateCount")]
    config = body.get("generationConfig") or body.get("generation_config")
    if isinstance(config, Mapping):
        counts.append(_positive(config.get("candidateCount") or config.get("candidate_count")))
    return max([c for c in counts if c is not None] or [1])


@dataclass(frozen=True)
class WorstCase:
    input_tokens: int
    output_tokens: int  # every completion's: per-completion maximum x choices
    micros: int
    input_rate: int
    output_rate: int
    choices: int = 1
    fixed_micros: int = 0  # billed per call, not per token (image-generation tool images)


def worst_case(body: Mapping[str, Any], pricing: ModelPricing | None, output_tokens: int | None = None,
               input_tokens: int | None = None) -> WorstCase:
    """`output_tokens` is a per-completion maximum (a clamp); `input_tokens` may be passed in when
    already estimated (it serializes the whole request)."""
    if input_tokens is None:
        input_tokens = estimate_input_tokens(body)
    if output_tokens is None:
        output_tokens = requested_max_output(body) or (pricing.max_output_tokens if pricing else 0) or 4096
    choices = completions(body)
    total_output = output_tokens * choices
    if pricing is None:
        return WorstCase(input_tokens, total_output, 0, 0, 0, choices)
    rate_in, rate_out = worst_rates(pricing, body=body)
    scaled = input_tokens * rate_in + total_output * rate_out
    fixed = image_fee_bound(body)
    micros = -(-scaled // PER_MILLION) + fixed  # round up: a reservation never under-covers
    return WorstCase(input_tokens, total_output, micros, rate_in, rate_out, choices, fixed)


def clamp_output(worst: WorstCase, remaining_micros: int) -> int | None:
    """The largest per-completion max output the remaining budget pays for (all `choices` of it),
    or None if not even MIN_CLAMPED_OUTPUT."""
    if worst.output_rate <= 0:
        return None
    input_cost = -(-(worst.input_tokens * worst.input_rate) // PER_MILLION) + worst.fixed_micros
    affordable = ((remaining_micros - input_cost) * PER_MILLION) // (worst.output_rate * worst.choices)
    if affordable < MIN_CLAMPED_OUTPUT:
        return None
    return min(affordable, worst.output_tokens // worst.choices)


def crossed_thresholds(before: int, after: int, cap: int, thresholds: tuple[int, ...]) -> list[int]:
    """Alert thresholds (percent) that `after` reached and `before` had not."""
    return [t for t in sorted(thresholds) if before * 100 < t * cap <= after * 100]


def throttle_due(budget: Budget, state: Mapping[str, Any], own_worst: int, day: str) -> bool:
    """Whether a request whose reservation left the counter at `state` is in the budget's throttle stage.

    Judged on what was committed *before* this request (spent plus every other request's in-flight
    reservation), for the monthly cap and for the daily cap: the same figure the hard cap uses. A
    flag set once a settlement found spend past the threshold (the earlier design) lags by every
    request already in flight or reserved before that settlement, so a burst, or a budget created
    with the month's spend already past the threshold, ran far past `throttle_at` unthrottled."""
    if budget.throttle_at is None or budget.throttle_rpm is None:
        return False
    for cap, committed in ((budget.monthly_micros, state.get("committed", 0)),
                           (budget.daily_micros, state.get(f"dc_{day}", 0))):
        if cap is not None and (int(committed) - own_worst) * 100 >= budget.throttle_at * cap:
            return True
    return False


_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")


def loop_fingerprint(body: Mapping[str, Any]) -> str:
    """Near-identical requests share a fingerprint: same model and the same last user turn (and tool
    results), compared case-insensitively with numbers and whitespace runs folded."""
    messages = body.get("messages") or []
    tail = [m for m in messages if isinstance(m, dict) and m.get("role") in ("user", "tool")][-2:]
    import json

    text = json.dumps([body.get("model"), [m.get("content") for m in tail]], sort_keys=True, default=str)
    normal = _SPACE.sub(" ", _DIGITS.sub("#", text.lower()))
    return hashlib.sha256(normal.encode()).hexdigest()[:24]
