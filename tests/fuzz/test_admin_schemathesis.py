"""Schemathesis over the admin API's OpenAPI schema: no input gets a server error (issue 14 item 12).

The admin API is buffered (not streamed), so it runs in process (ASGI) over the embedded AWS,
authenticated as the local operator so that every operation is reachable, with `workspace` pinned
to an existing one so that generated input reaches the operations rather than a 404. Schemathesis'
coverage phase (boundary and type-violating values for every parameter and body field) and its
fuzzing phase run deterministically (fixed seed, derandomized, no example database), with few
examples per operation so that the run stays well under a minute on a loaded 2-core machine.
Nothing leaves the machine: the two operations that fetch published price data from the internet
(`/prices/sync`, `/prices/diff`) are left out; their inputs are tested in test_prices_sync.py.

In process an unhandled exception reaches the engine as an error event rather than a 500
response, so both count as server errors.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import schemathesis
from schemathesis import Config
from schemathesis.engine import events, from_schema

from meterline.admin.app import create_admin_app
from meterline.admin.local import LocalTokens
from meterline.admin.ops import Ops
from meterline.devenv import provision

NEEDS_INTERNET = "^/prices/(sync|diff)$"
MAX_EXAMPLES = 2
SEED = 20261201


def test_no_admin_api_input_gets_a_server_error(moto, tmp_path: Path):
    settings = provision(moto.endpoint, prefix="z" + uuid.uuid4().hex[:10])
    Ops(settings).create_workspace("demo", "Demo")
    tokens = LocalTokens.ensure(tmp_path)
    config = Config.from_str(f"""
seed = {SEED}
headers = {{ Authorization = "Bearer {tokens.operator_token()}" }}
[generation]
max-examples = {MAX_EXAMPLES}
deterministic = true
database = "none"
[phases]
examples.enabled = false
stateful.enabled = false
[checks]
enabled = false
not_a_server_error.enabled = true
[parameters]
"path.workspace" = "demo"
""")
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_admin_app(settings, tokens), config=config)
    schema = schema.exclude(path_regex=NEEDS_INTERNET)

    statuses: Counter[int] = Counter()
    server_errors: list[str] = []
    operations: set[str] = set()
    finished = None
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            operations.add(event.recorder.label)
            for interaction in event.recorder.interactions.values():
                status = interaction.response.status_code if interaction.response is not None else 0
                statuses[status // 100 * 100] += 1
                if status >= 500:
                    server_errors.append(f"{event.recorder.label}: {status}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            server_errors.append(f"{getattr(event, 'label', '?')}: {event.value!r}"[:500])
        elif isinstance(event, events.EngineFinished):
            finished = event
    cases = sum(statuses.values())
    print(f"schemathesis: {len(operations)} operations, {cases} cases, statuses {dict(sorted(statuses.items()))}, "
          f"server errors {len(server_errors)}")
    assert finished is not None and not finished.failures
    assert server_errors == []
    # It really ran: every operation but the two left out, and many cases got past validation.
    assert len(operations) == sum(1 for _ in schema.get_all_operations()) >= 40
    assert cases >= 600 and statuses[200] >= 80
