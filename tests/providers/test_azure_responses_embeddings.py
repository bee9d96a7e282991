"""Azure OpenAI deployments, the Responses API and Embeddings, metered like chat.

GIVEN an `azure` entry (endpoint, api-version, deployment -> model map) and an `openai` entry, both fakes
WHEN the OpenAI SDK calls chat, responses and embeddings on them, streaming where the API streams
THEN Azure gets its own URL shape and `api-key` header, each deployment is priced as the model it
     runs, and Responses/Embeddings usage is metered exactly, streamed or not.
"""

from __future__ import annotations

import openai
import pytest

from tests.conftest import wait_for_ledger
from tests.oracle import embeddings_cost_micros, openai_cost_micros
from tests.providers.conftest import AZURE_SECRET, OPENAI_SECRET


def oa(gateway, world) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=world.api_key, max_retries=0)


@pytest.mark.parametrize("stream", [False, True])
def test_azure_chat_uses_deployment_url_api_key_and_the_mapped_models_price(gateway, world, fakes, settings, stream):
    sdk = oa(gateway, world)
    messages = [{"role": "user", "content": "hi"}]
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in sdk.chat.completions.create(
            model="azure/prod-4o", messages=messages, stream=True) if c.choices)
    else:
        text = sdk.chat.completions.create(model="azure/prod-4o", messages=messages).choices[0].message.content
    assert text == "Hello there! How can I help you today?"
    [call] = fakes.azure_log.calls
    assert call["deployment"] == "prod-4o" and call["path"] == "chat/completions"
    assert call["query"] == "api-version=2024-10-21"
    assert call["api-key"] == AZURE_SECRET and call["authorization"] == ""
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert record["provider"] == "azure" and record["model"] == "azure/prod-4o"
    assert record["cost_micros"] == openai_cost_micros("openai/gpt-4o", 1200, 1024, 10)


def test_azure_deployments_are_listed_as_models(gateway, world):
    ids = {m.id for m in oa(gateway, world).models.list()}
    assert {"azure/prod-4o", "azure/reasoner", "azure/emb-small"} <= ids
    assert "azure/gpt-4o" not in ids


def test_unmapped_azure_deployment_is_refused_as_unpriced(gateway, world):
    with pytest.raises(openai.NotFoundError) as err:
        oa(gateway, world).chat.completions.create(model="azure/unknown-deploy",
                                                   messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "model_not_priced"


def responses_cost(fake) -> int:
    return openai_cost_micros("openai/gpt-5", fake.input_tokens, fake.cached_tokens, fake.output_tokens)


def test_responses_api_non_streaming_and_streaming_cost_the_same(gateway, world, fakes, settings):
    sdk = oa(gateway, world)
    response = sdk.responses.create(model="openai/gpt-5", input="Say hi", extra_headers={"Meterline-Feature": "r"})
    assert response.output_text == "Hi from Responses."
    assert response.usage.input_tokens_details.cached_tokens == 1536
    events = list(sdk.responses.create(model="openai/gpt-5", input=[{"role": "user", "content": "Say hi"}],
                                       stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.usage.output_tokens == 64
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hi from Responses."
    assert fakes.openai.headers[0]["authorization"] == f"Bearer {OPENAI_SECRET}"
    records = wait_for_ledger(settings, world.workspace, 2)
    assert {r["endpoint"] for r in records} == {"responses"}
    assert {r["cost_micros"] for r in records} == {responses_cost(fakes.openai)}
    assert all(r["reasoning"] == 32 and r["estimated"] is False for r in records)


def test_responses_through_azure(gateway, world, fakes, settings):
    oa(gateway, world).responses.create(model="azure/reasoner", input="hi")
    assert fakes.azure_log.calls[0]["path"] == "responses"
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert record["cost_micros"] == responses_cost(fakes.azure)


def test_responses_to_a_non_openai_provider_is_a_clear_400(gateway, world, fakes):
    with pytest.raises(openai.BadRequestError) as err:
        oa(gateway, world).responses.create(model="anthropic/claude-sonnet-4-6", input="hi")
    assert "/v1/responses cannot reach a `anthropic` provider" in err.value.message
    assert fakes.anthropic.requests == []


@pytest.mark.parametrize(("model", "fake_name", "catalog_model"), [
    ("openai/text-embedding-3-small", "openai", "openai/text-embedding-3-small"),
    ("azure/emb-small", "azure", "openai/text-embedding-3-small"),
])
def test_embeddings_are_metered(gateway, world, fakes, settings, model, fake_name, catalog_model):
    result = oa(gateway, world).embeddings.create(model=model, input=["a", "b"])
    assert len(result.data) == 2 and result.usage.prompt_tokens == 17
    [record] = wait_for_ledger(settings, world.workspace, 1)
    assert record["endpoint"] == "embeddings" and record["input_uncached"] == 17 and record["output"] == 0
    assert record["cost_micros"] == embeddings_cost_micros(catalog_model, 17)


def test_embeddings_errors_are_openai_shaped(gateway, world, fakes):
    fakes.openai.error = (429, {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}})
    with pytest.raises(openai.RateLimitError) as err:
        oa(gateway, world).embeddings.create(model="openai/text-embedding-3-small", input="a")
    # The provider's 429, relayed (not one of the gateway's own rate limits or budgets).
    assert err.value.status_code == 429 and "Rate limit reached" in err.value.message
    assert err.value.code == "upstream_error" and err.value.response.headers["meterline-request-id"]
