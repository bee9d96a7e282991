"""The exact-match response cache through the official SDKs against the gateway on uvicorn."""

from __future__ import annotations

import asyncio
import json

import anthropic
import httpx
import openai
import pytest

from meterline.store.workspaces import WorkspaceStore
from tests.conftest import ledger_items, wait_for_ledger
from tests.levers.conftest import make_world

Q = [{"role": "user", "content": "What is the capital of France?"}]


def cache_on(settings, workspace, scope="workspace", **rule):
    WorkspaceStore(settings).put_cache_rule(workspace, scope, rule)


def sdk(gateway, world, **headers):
    return openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0,
                         default_headers=headers or None)


def test_chat_miss_stores_then_hit_costs_nothing_and_records_the_saving(gateway, world, fakes, settings):
    cache_on(settings, world.workspace)
    client = sdk(gateway, world)
    first = client.chat.completions.with_raw_response.create(model="openai/gpt-4o", messages=Q, temperature=0)
    assert first.headers["meterline-cache"] == "stored"
    second = client.chat.completions.with_raw_response.create(model="openai/gpt-4o", messages=Q, temperature=0)
    assert second.headers["meterline-cache"] == "hit"
    assert int(second.headers["meterline-cache-age"]) >= 0
    assert second.headers["meterline-cost-usd"] == "0.000000"
    assert second.parse().model_dump() == first.parse().model_dump()
    assert len(fakes.openai.chat.requests) == 1  # the hit made no provider call
    miss, hit = wait_for_ledger(settings, world.workspace, 2)
    assert miss["outcome"] == "ok" and miss["cost_micros"] > 0 and miss["cache"] == "miss"
    assert hit["outcome"] == "cache_hit" and hit["cost_micros"] == 0 and hit["cache"] == "hit"
    assert hit["input_uncached"] == hit["output"] == 0
    assert hit["savings"] == {"exact_cache": miss["cost_micros"]} and hit["saved_micros"] == miss["cost_micros"]
    assert hit["provider"] == "openai" and hit["model"] == miss["model"]
    assert hit["cached_request_id"] == miss["request_id"]
    assert second.headers["meterline-saved-usd"] == f"{miss['cost_micros'] / 1e6:.6f}"


def test_off_by_default_and_on_per_request(gateway, world, fakes):
    client = sdk(gateway, world)
    raw = client.chat.completions.with_raw_response.create(model="openai/gpt-4o", messages=Q, temperature=0)
    assert "meterline-cache" not in raw.headers  # no rule, no header: the cache plays no part
    on = {"meterline-cache": "on"}
    assert call(client, headers=on).headers["meterline-cache"] == "stored"
    assert call(client, headers=on).headers["meterline-cache"] == "hit"
    assert "meterline-cache" not in call(client).headers  # the entry is only read by those who ask
    assert len(fakes.openai.chat.requests) == 3


@pytest.fixture
def cached_world(settings, fakes):
    w = make_world(settings, fakes)
    cache_on(settings, w.workspace)
    return w


def call(client, *, headers=None, **body):
    args = {"model": "openai/gpt-4o", "messages": Q, "temperature": 0, **body}
    return client.chat.completions.with_raw_response.create(**args, extra_headers=headers or {})


def test_request_controls(gateway, cached_world, fakes, settings):
    client = sdk(gateway, cached_world)
    assert call(client).headers["meterline-cache"] == "stored"
    assert call(client).headers["meterline-cache"] == "hit"
    assert call(client, headers={"meterline-cache": "off"}).headers["meterline-cache"] == "bypass"
    assert call(client, headers={"cache-control": "no-store"}).headers["meterline-cache"] == "bypass"
    assert call(client, headers={"meterline-cache": "refresh"}).headers["meterline-cache"] == "stored"
    assert call(client, headers={"cache-control": "no-cache"}).headers["meterline-cache"] == "stored"
    assert call(client, headers={"cache-control": "max-age=3600"}).headers["meterline-cache"] == "hit"
    assert call(client, headers={"cache-control": "max-age=0"}).headers["meterline-cache"] == "stored"
    bypass = call(client, temperature=0.8)
    assert bypass.headers["meterline-cache"] == "bypass" and bypass.headers["meterline-cache-reason"] == "temperature"
    assert call(client, n=2).headers["meterline-cache-reason"] == "n"
    with pytest.raises(openai.BadRequestError) as err:
        call(client, headers={"meterline-cache": "always"})
    assert "Meterline-Cache" in str(err.value)
    # the fill, then off, no-store, refresh, no-cache, max-age=0, temperature, n; the hits: none
    assert len(fakes.openai.chat.requests) == 8


def test_errors_and_cut_streams_are_not_stored(gateway, cached_world, fakes, settings):
    client = sdk(gateway, cached_world)
    fakes.openai.chat.error = (500, {"error": {"message": "boom", "type": "server_error"}})
    with pytest.raises(openai.InternalServerError):
        call(client)
    fakes.openai.chat.error = None
    fakes.openai.chat.cut_after_chunks = 2
    with pytest.raises(openai.APIError) as err:
        list(client.chat.completions.create(model="openai/gpt-4o", messages=Q, temperature=0, stream=True))
    assert not isinstance(err.value, openai.APIConnectionError)  # the gateway's error event, not a broken socket
    fakes.openai.chat.cut_after_chunks = None
    assert call(client).headers["meterline-cache"] == "stored"  # neither the error nor the cut was stored
    records = wait_for_ledger(settings, cached_world.workspace, 3)
    assert records[1]["cache_not_stored"] == "not_complete"


def test_identical_bodies_from_two_workspaces_never_share(gateway, settings, fakes):
    a, b = make_world(settings, fakes), make_world(settings, fakes)
    for w in (a, b):
        cache_on(settings, w.workspace)
    ca, cb = sdk(gateway, a), sdk(gateway, b)
    assert call(ca).headers["meterline-cache"] == "stored"
    # Same body, same provider URL, same model: B still misses, and B's own entry is B's.
    assert call(cb).headers["meterline-cache"] == "stored"
    assert call(ca).headers["meterline-cache"] == "hit"
    assert call(cb).headers["meterline-cache"] == "hit"
    assert len(fakes.openai.chat.requests) == 2
    hits = [r for r in ledger_items(settings) if r.get("outcome") == "cache_hit"]
    by_ws = {r["workspace"]: r for r in hits}
    requests = {r["request_id"]: r["workspace"] for r in ledger_items(settings)}
    for ws, record in by_ws.items():  # each hit was filled by its own workspace's request
        assert requests[record["cached_request_id"]] == ws


def test_partitions_inside_a_workspace(gateway, settings, fakes):
    from meterline.store.keys import KeyRecord, KeyStore
    from meterline.vkeys import generate, hash_key

    w = make_world(settings, fakes)
    cache_on(settings, w.workspace, partition="key")
    other_key, other_id = generate()
    KeyStore(settings).create(KeyRecord(key_hash=hash_key(other_key), key_id=other_id, workspace=w.workspace,
                                        member="bob", department="platform"))
    mine = sdk(gateway, w)
    theirs = openai.OpenAI(base_url=gateway.base_url, api_key=other_key, max_retries=0)
    assert call(mine).headers["meterline-cache"] == "stored"
    assert call(theirs).headers["meterline-cache"] == "stored"  # another key: its own partition
    assert call(theirs).headers["meterline-cache"] == "hit"
    # Customer partition: without a customer there is nothing safe to share.
    cache_on(settings, w.workspace, f"key:{w.key_id}", partition="customer")
    w2 = make_world(settings, fakes)
    cache_on(settings, w2.workspace, partition="customer")
    c2 = sdk(gateway, w2)
    assert call(c2).headers["meterline-cache-reason"] == "no_customer"
    assert call(c2, headers={"meterline-customer": "acme"}).headers["meterline-cache"] == "stored"
    assert call(c2, headers={"meterline-customer": "globex"}).headers["meterline-cache"] == "stored"
    assert call(c2, headers={"meterline-customer": "acme"}).headers["meterline-cache"] == "hit"


def test_stream_fills_what_a_plain_request_reads_and_back(gateway, cached_world, fakes, settings):
    client = sdk(gateway, cached_world)
    streamed = list(client.chat.completions.create(model="openai/gpt-4o", messages=Q, temperature=0, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    plain = call(client)
    assert plain.headers["meterline-cache"] == "hit"
    assert plain.parse().choices[0].message.content == text
    assert plain.parse().usage.prompt_tokens == fakes.openai.chat.prompt_tokens  # usage kept from the stream
    assert len(fakes.openai.chat.requests) == 1
    # and back: a new question filled by a plain request, read by a stream (several chunks)
    q2 = [{"role": "user", "content": "And of Italy?"}]
    filled = call(client, messages=q2).parse()
    chunks = list(client.chat.completions.create(model="openai/gpt-4o", messages=q2, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(content) == filled.choices[0].message.content
    assert chunks[-1].usage.total_tokens == filled.usage.total_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len(fakes.openai.chat.requests) == 2


def test_stream_replay_read_raw_is_native_sse_in_several_chunks(gateway, cached_world, fakes):
    fakes.openai.chat.chunks = [f" word{i}" for i in range(40)]
    call(sdk(gateway, cached_world))
    with httpx.Client(timeout=10) as http, http.stream(
            "POST", gateway.base_url + "/chat/completions", headers={"authorization": f"Bearer {cached_world.api_key}"},
            json={"model": "openai/gpt-4o", "messages": Q, "temperature": 0, "stream": True}) as response:
        assert response.headers["meterline-cache"] == "hit"
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_raw())
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-fake123" for c in chunks)
    content = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert len([c for c in content if c]) >= 8
    assert "".join(c or "" for c in content) == "".join(fakes.openai.chat.chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_tool_calls_replay_through_the_sdk(gateway, cached_world, fakes, settings):
    fakes.anthropic.tool_call = {"id": "toolu_9", "name": "get_weather", "input": {"city": "Paris", "days": 3}}
    client = sdk(gateway, cached_world)
    args = {"model": "anthropic/claude-sonnet-4-5", "messages": Q, "temperature": 0, "max_tokens": 100,
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}
    streamed = list(client.chat.completions.create(**args, stream=True))
    original = [tc for c in streamed if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert original
    hit = client.chat.completions.with_raw_response.create(**args)
    assert hit.headers["meterline-cache"] == "hit"
    message = hit.parse().choices[0].message
    assert message.tool_calls[0].id == "toolu_9"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris", "days": 3}
    replayed = list(client.chat.completions.create(**args, stream=True))
    calls = [tc for c in replayed if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id == "toolu_9" and calls[0].function.name == "get_weather"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "Paris", "days": 3}
    assert len(fakes.anthropic.requests) == 1


def test_anthropic_messages_through_the_sdk_stream_and_back(gateway, cached_world, fakes, settings):
    fakes.anthropic.tool_call = {"id": "toolu_1", "name": "lookup", "input": {"q": "capital of France"}}
    client = anthropic.Anthropic(base_url=gateway.url, api_key=cached_world.api_key, max_retries=0)
    # (this SDK version has no `temperature` argument: sent as an extra body field)
    args = {"model": "anthropic/claude-sonnet-4-5", "max_tokens": 200, "messages": Q,
            "extra_body": {"temperature": 0}}
    first = client.messages.with_raw_response.create(**args)
    assert first.headers["meterline-cache"] == "stored"
    original = first.parse()
    with client.messages.stream(**args) as stream:
        deltas = [e for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
        assert stream.response.headers["meterline-cache"] == "hit"
    assert len(deltas) >= 2
    assert final.model_dump(exclude_none=True) == original.model_dump(exclude_none=True)
    assert len(fakes.anthropic.requests) == 1
    # a stream fills what a plain request reads
    args2 = {**args, "messages": [{"role": "user", "content": "And Italy?"}]}
    with client.messages.stream(**args2) as stream:
        streamed = stream.get_final_message()
    plain = client.messages.with_raw_response.create(**args2)
    assert plain.headers["meterline-cache"] == "hit"
    assert [b.to_dict() for b in plain.parse().content] == [
        {k: v for k, v in b.to_dict().items() if k != "parsed_output"} for b in streamed.content]
    assert plain.parse().stop_reason == "tool_use"
    records = wait_for_ledger(settings, cached_world.workspace, 4)
    assert [r["outcome"] for r in records] == ["ok", "cache_hit", "ok", "cache_hit"]
    assert records[1]["saved_micros"] == records[0]["cost_micros"] > 0


def test_responses_through_the_sdk_stream_and_back(gateway, cached_world, fakes):
    client = sdk(gateway, cached_world)
    args = {"model": "openai/gpt-4o", "input": "Say hi", "temperature": 0}
    events = list(client.responses.create(**args, stream=True))
    assert events[-1].type == "response.completed"
    plain = client.responses.with_raw_response.create(**args)
    assert plain.headers["meterline-cache"] == "hit"
    assert plain.parse().output_text == events[-1].response.output_text
    with client.responses.stream(**args) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds.count("response.output_text.delta") >= 1 and "response.content_part.added" in kinds
    assert final.output_text == "Hi from Responses."
    assert len(fakes.openai.requests) == 1


def test_embeddings_are_cached(gateway, cached_world, fakes):
    client = sdk(gateway, cached_world)
    first = client.embeddings.with_raw_response.create(model="openai/text-embedding-3-small", input="hello")
    second = client.embeddings.with_raw_response.create(model="openai/text-embedding-3-small", input="hello")
    assert (first.headers["meterline-cache"], second.headers["meterline-cache"]) == ("stored", "hit")
    assert second.parse().data[0].embedding == first.parse().data[0].embedding
    assert len(fakes.openai.requests) == 1


def test_a_burst_of_identical_misses_makes_one_upstream_call(gateway, cached_world, fakes, settings):
    fakes.openai.chat.delay_before_headers_s = 0.5

    async def burst():
        client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=cached_world.api_key, max_retries=0,
                                    timeout=30)
        results = await asyncio.gather(*(client.chat.completions.with_raw_response.create(
            model="openai/gpt-4o", messages=Q, temperature=0, stream=(i % 2 == 1)) for i in range(6)))
        await client.close()
        return results

    results = asyncio.run(burst())
    assert len(fakes.openai.chat.requests) == 1
    assert sorted(r.headers["meterline-cache"] for r in results).count("hit") == 5
    records = wait_for_ledger(settings, cached_world.workspace, 6)
    assert sorted(r["outcome"] for r in records) == ["cache_hit"] * 5 + ["ok"]


def test_a_filling_marker_makes_other_instances_wait_for_the_entry(start_gateway, settings, fakes):
    """Two gateway processes (separate in-flight tables): the second finds the first's marker and
    waits for its entry instead of calling the provider."""
    w = make_world(settings, fakes)
    cache_on(settings, w.workspace)
    one, two = start_gateway(), start_gateway()
    fakes.openai.chat.delay_before_headers_s = 1.0

    async def both():
        c1 = openai.AsyncOpenAI(base_url=one.base_url, api_key=w.api_key, max_retries=0, timeout=30)
        c2 = openai.AsyncOpenAI(base_url=two.base_url, api_key=w.api_key, max_retries=0, timeout=30)
        first = asyncio.ensure_future(c1.chat.completions.with_raw_response.create(
            model="openai/gpt-4o", messages=Q, temperature=0))
        await asyncio.sleep(0.4)  # the first has claimed the marker and is waiting on the provider
        second = await c2.chat.completions.with_raw_response.create(model="openai/gpt-4o", messages=Q, temperature=0)
        return await first, second

    first, second = asyncio.run(both())
    assert first.headers["meterline-cache"] == "stored" and second.headers["meterline-cache"] == "hit"
    assert len(fakes.openai.chat.requests) == 1


def test_a_hit_reserves_no_budget(gateway, cached_world, fakes, settings):
    from meterline.admin.ops import Ops
    from meterline.budgets.model import Budget

    Ops(settings).set_budget(cached_world.workspace, Budget("workspace", cached_world.workspace,
                                                            monthly_micros=10_000_000))
    client = sdk(gateway, cached_world)
    call(client)
    call(client)
    rows = Ops(settings).list_budgets(cached_world.workspace)
    spent = next(r for r in rows if r["scope"].startswith("workspace:"))
    miss = wait_for_ledger(settings, cached_world.workspace, 2)[0]
    assert spent["spent_month_micros"] == miss["cost_micros"]  # the hit added nothing
    assert spent["reserved_micros"] == 0  # and its concurrent reservation was released
