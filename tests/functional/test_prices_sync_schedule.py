"""The scheduled `prices sync`: the event the optional EventBridge rule sends the admin function.

GIVEN newer published price data (one price changed, one model added) served on loopback as the
      sync's source, and the real admin Lambda handler (moto for DynamoDB)
WHEN the schedule's event {"meterline_task": "prices.sync"} invokes the handler
THEN the new catalog is accepted and stored, audited under the schedule's own actor; data that would
     drop priced models is refused (the invocation fails, nothing is stored); a function URL request
     to the same handler is still the admin API.
"""

from __future__ import annotations

import json

import pytest

from infra_cdk import constants as c
from meterline.admin import tasks
from meterline.pricing import sync
from meterline.store.audit import AuditStore
from meterline.store.prices import PriceCatalogStore
from tests.functional.test_admin_handler import Context, admin_handler, call
from tests.functional.test_prices_sync import data_url, newer_data  # noqa: F401  (fixtures)
from tests.pricedata import dumps
from tests.servers import ServerThread


@pytest.fixture
def admin(settings, monkeypatch):
    return admin_handler(settings, monkeypatch, "admin_handler_schedule")


def test_the_schedule_event_syncs_and_is_audited(admin, settings, data_url, monkeypatch):  # noqa: F811
    monkeypatch.setattr(sync, "DEFAULT_SOURCE", data_url)  # the rule sends no source: the default's
    out = admin(dict(c.PRICES_SYNC_TASK), Context())
    assert out["accepted"] is True and out["new"] == 1 and out["changed"] >= 1 and out["removed"] == 0
    head = PriceCatalogStore(settings).head()
    assert head is not None and head.digest == out["digest"] and head.source == data_url
    [event] = AuditStore(settings).by_actor(tasks.ACTOR)
    assert event["action"] == "prices.sync"
    # The same handler still serves the admin API to function URL requests.
    assert call(admin, "POST", "/workspaces", {"id": "acme", "name": "Acme"})[0] == 201


def test_a_scheduled_sync_never_drops_priced_models(admin, settings, newer_data, monkeypatch):  # noqa: F811
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    shrunk = dumps([p for p in json.loads(newer_data) if p["id"] != "deepseek"])

    async def serve(request):
        return Response(shrunk, media_type="application/json")

    with ServerThread(Starlette(routes=[Route("/data.json", serve)])) as server:
        monkeypatch.setattr(sync, "DEFAULT_SOURCE", server.url + "/data.json")
        with pytest.raises(tasks.TaskError, match=r"drops \d+ priced models"):
            admin(dict(c.PRICES_SYNC_TASK), Context())
    assert PriceCatalogStore(settings).head() is None
    assert AuditStore(settings).by_actor(tasks.ACTOR) == []


def test_unknown_tasks_and_plain_http_sources_are_refused(admin):
    with pytest.raises(tasks.TaskError, match="unknown task"):
        admin({"meterline_task": "drop.tables"}, Context())
    with pytest.raises(tasks.TaskError, match="https"):
        admin({**c.PRICES_SYNC_TASK, "source": "http://169.254.169.254/latest"}, Context())
