"""The request context: one object that every pipeline stage reads and writes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from meterline.errors import GatewayError
from meterline.pricing.catalog import ModelPricing
from meterline.pricing.cost import Cost
from meterline.store.keys import KeyRecord
from meterline.store.ledger import new_request_id
from meterline.store.workspaces import WorkspaceConfig
from meterline.translators.base import Target, Translator
from meterline.usage import Usage


@dataclass
class RequestContext:
    endpoint: str  # "chat.completions"
    headers: dict[str, str]
    client_ip: str | None = None
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.monotonic)
    started_wall_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    # authenticate
    key: KeyRecord | None = None
    workspace: WorkspaceConfig | None = None
    tags: dict[str, str | None] = field(default_factory=dict)
    # request
    body: dict[str, Any] | None = None
    stream: bool = False
    requested_model: str | None = None
    # route
    target: Target | None = None
    model_id: str | None = None  # catalog id the request is priced as
    pricing: ModelPricing | None = None
    translator: Translator | None = None
    # upstream: attempt n of the request's routes (fallbacks); each attempt has its own ledger record
    attempt: int = 1
    reached_provider: bool = False
    upstream_status: int | None = None
    first_byte_ms: float | None = None
    # Time spent waiting on the provider (send, body, stream chunks; every attempt) and on the client
    # (a streamed chunk's send): what the gateway-added latency metric leaves out (added_ms).
    upstream_ms: float = 0.0
    client_ms: float = 0.0
    response_model: str | None = None
    service_tier: str | None = None
    usage: Usage | None = None
    # meter
    cost: Cost | None = None
    unpriced: bool = False
    # outcome: ok | rejected | upstream_error | upstream_timeout | upstream_unavailable |
    #          upstream_break | client_disconnect | error
    outcome: str = "ok"
    error: GatewayError | None = None
    ledger_written: bool = False
    # what each cost lever saved on this request, integer micro-dollars (levers.LEVERS names them)
    savings: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def note(self, **fields: Any) -> None:
        """Add fields to the request's ledger record (policy and lever decisions). Merges, so
        stages never overwrite each other's notes."""
        self.extra.setdefault("ledger_extra", {}).update(fields)

    def save(self, lever: str, micros: int) -> None:
        """Record what a lever saved (what the provider would have billed without it, minus what
        it did bill). Exact integers, like costs."""
        if micros:
            self.savings[lever] = self.savings.get(lever, 0) + int(micros)

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000

    def added_ms(self) -> float:
        """Gateway-added latency: end to end minus the waits on the provider and on the client."""
        return max(self.elapsed_ms() - self.upstream_ms - self.client_ms, 0.0)
