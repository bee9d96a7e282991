"""`prices sync` / `prices diff` against a local copy of newer published price data.

GIVEN genai-prices' data with one price changed and one model added, served on loopback
WHEN an operator diffs it, then syncs it with --yes
THEN the diff names exactly the new model and the changed price, nothing is stored until accepted,
     and a running gateway prices the new model (and the new price) without a redeploy; data that
     would drop priced models is refused unless removals are allowed.
"""

from __future__ import annotations

import json

import openai
import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from meterline.admin.ops import OpError, Ops
from meterline.store.prices import PriceCatalogStore
from tests.conftest import make_tenant, wait_for_ledger
from tests.pricedata import dumps, published
from tests.servers import ServerThread


@pytest.fixture(scope="module")
def newer_data() -> bytes:
    data = published()
    openai_provider = next(p for p in data if p["id"] == "openai")
    gpt4o = next(m for m in openai_provider["models"] if m["id"] == "gpt-4o")
    gpt4o["prices"]["input_mtok"] = 3  # was 2.5
    openai_provider["models"].append({"id": "gpt-9-test", "match": {"equals": "gpt-9-test"},
                                      "prices": {"input_mtok": 7, "output_mtok": 21, "cache_read_mtok": 0.7}})
    return dumps(data)


@pytest.fixture
def data_url(newer_data):
    async def serve(request):
        return Response(newer_data, media_type="application/json")

    with ServerThread(Starlette(routes=[Route("/data.json", serve)])) as server:
        yield server.url + "/data.json"


def test_diff_names_new_and_changed_prices_and_stores_nothing(settings, data_url):
    out = Ops(settings, actor="test").prices_diff(data_url)
    assert out["current"] == "bundled"
    assert out["diff"]["new"] == ["openai/gpt-9-test"] and out["diff"]["removed"] == []
    assert {"model": "openai/gpt-4o", "price": "input", "old": "2.5", "new": "3"} in out["diff"]["changed"]
    assert all(c["model"] == "openai/gpt-4o" for c in out["diff"]["changed"])
    unaccepted = Ops(settings, actor="test").prices_sync(data_url)
    assert unaccepted["accepted"] is False and PriceCatalogStore(settings).head() is None


def test_accepted_prices_reach_a_running_gateway_without_a_redeploy(gateway, settings, fake_openai, data_url):
    fake, url = fake_openai
    t = make_tenant(settings, url)
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=t.api_key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as err:
        sdk.chat.completions.create(model="gpt-9-test", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "model_not_priced"

    out = Ops(settings, actor="test").prices_sync(data_url, accept=True)
    assert out["accepted"] and PriceCatalogStore(settings).head().digest == out["digest"]
    again = Ops(settings, actor="test").prices_diff(data_url)
    assert again["current"].startswith("accepted ") and again["diff"] == {"new": [], "removed": [], "changed": []}

    # The gateway's caches expire (TTL); no restart, no redeploy.
    gateway.services.workspace_cache.invalidate()
    gateway.services.catalog_cache.invalidate()
    sdk.chat.completions.create(model="gpt-9-test", messages=[{"role": "user", "content": "hi"}])
    sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    records = {r["model"]: r for r in wait_for_ledger(settings, t.workspace, 2)}
    uncached, cached, completion = fake.prompt_tokens - fake.cached_tokens, fake.cached_tokens, fake.completion_tokens
    # USD per 1M tokens x tokens = micro-dollars, rounded once, half up
    assert records["openai/gpt-9-test"]["cost_micros"] == round(uncached * 7 + cached * 0.7 + completion * 21)
    assert records["openai/gpt-4o"]["cost_micros"] == round(uncached * 3 + cached * 1.25 + completion * 10)
    assert "genai-prices" not in json.dumps(records["openai/gpt-9-test"].get("price_gaps", []))


def test_data_that_drops_priced_models_needs_allow_removals(settings, newer_data, tmp_path):
    data = [p for p in json.loads(newer_data) if p["id"] != "deepseek"]
    path = tmp_path / "data.json"
    path.write_bytes(dumps(data))
    ops = Ops(settings, actor="test")
    with pytest.raises(OpError) as err:
        ops.prices_sync(str(path), accept=True)
    assert err.value.status == 409 and "deepseek/" in str(err.value)
    assert PriceCatalogStore(settings).head() is None
    out = ops.prices_sync(str(path), accept=True, allow_removals=True)
    assert out["accepted"] and all(m.startswith("deepseek/") for m in out["diff"]["removed"])


def test_unusable_data_is_a_clear_error(settings, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a provider list"}')
    with pytest.raises(OpError, match="does not compile"):
        Ops(settings, actor="test").prices_diff(str(bad))
    with pytest.raises(OpError, match="no price data file"):
        Ops(settings, actor="test").prices_diff(str(tmp_path / "missing.json"))
