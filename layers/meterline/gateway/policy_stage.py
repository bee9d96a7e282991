"""The policies stage: the workspace's request policies (policies/), after the body is read and
before the cache lookup, routing and any budget reservation, so a denied request costs nothing and a
cached answer never bypasses a policy.

PII redaction (an opt-in pii policy) rewrites the body here, so the provider, the cache key, logs
and the ledger only ever see placeholders; the ledger gets counts per kind, never values. With
`restore`, the response (streams included) gets the caller's values back on the way out.

The policies come compiled with the workspace config (cached, no round trip). Every decision is in
the request's ledger record (`policies`: {policy id: outcome}; `policy_denied`: the id that denied),
and a denial is logged on the audit logger. A denial answers in the caller's dialect with
`code: policy_denied` and the policy's id.
"""

from __future__ import annotations

import logging
import time

from meterline.errors import PolicyDenied
from meterline.gateway import addressing
from meterline.gateway.context import RequestContext
from meterline.gateway.pipeline import BaseStage, Decision
from meterline.gateway.services import Services
from meterline.policies.engine import (
    GENERATION_ENDPOINTS,
    Compiled,
    Facts,
    PolicySet,
    evaluate,
    message_count,
    requested_max_tokens,
)
from meterline.policies.ip import source_ip
from meterline.policies.pii import Redactor

audit = logging.getLogger("meterline.audit")


def facts_of(ctx: RequestContext, policies: PolicySet, behind_lambda_adapter: bool) -> tuple[Facts, list[Compiled]]:
    """The request's facts and the policies that apply to it (the source IP only if one needs it)."""
    assert ctx.workspace and ctx.key and ctx.body is not None
    provider, model = addressing.target_of(ctx.requested_model or "", ctx.workspace, ctx.endpoint)
    facts = Facts(endpoint=ctx.endpoint, model=f"{provider}/{model}", key=ctx.key.key_id, member=ctx.key.member,
                  department=ctx.key.department, feature=ctx.tags.get("feature"),
                  body_bytes=int(ctx.extra.get("body_bytes", 0)), messages=message_count(ctx.body),
                  max_tokens=requested_max_tokens(ctx.endpoint, ctx.body)[1], now=ctx.started_wall_ms / 1000)
    applicable = policies.applicable(facts)
    if any(c.spec.kind == "ip" for c in applicable):
        facts.client_ip = source_ip(ctx.client_ip, ctx.headers, behind_lambda_adapter=behind_lambda_adapter,
                                    trusted_proxies=policies.trusted_proxies)
    return facts, applicable


class PolicyStage(BaseStage):
    name = "policies"

    def __init__(self, services: Services):
        self.behind_lambda_adapter = services.settings.behind_lambda_adapter

    async def before(self, ctx: RequestContext) -> Decision | None:
        assert ctx.workspace is not None and ctx.body is not None
        policies = ctx.workspace.policies
        if not policies.count:
            return None
        facts, applicable = facts_of(ctx, policies, self.behind_lambda_adapter)
        if not applicable:
            return None
        verdict = evaluate(policies, facts, applicable)
        if not verdict.outcomes:
            return None
        ctx.note(policies=verdict.ledger_note())
        denied = verdict.denied
        if denied is not None:
            ctx.note(policy_denied=denied.policy)
            audit.info("policy_denied", extra={"audit": {
                "actor": ctx.key.key_id if ctx.key else None, "action": "policy.deny",
                "workspace": ctx.workspace.workspace, "target": {"policy": denied.policy, "kind": denied.kind,
                                                                  "request_id": ctx.request_id},
                "ts": int(time.time())}})
            param = {"models": "model", "max_tokens": requested_max_tokens(ctx.endpoint, ctx.body)[0]}.get(denied.kind)
            return Decision.deny(PolicyDenied(
                f"Request denied by policy `{denied.policy}` ({denied.kind}): {denied.reason}.",
                policy=denied.policy, status=denied.status, param=param))
        if verdict.max_tokens is not None:
            field, _ = requested_max_tokens(ctx.endpoint, ctx.body)
            if field is not None:
                ctx.body[field] = verdict.max_tokens
                ctx.extra.setdefault("response_headers", {})["meterline-max-tokens-capped"] = str(verdict.max_tokens)
        if verdict.pii_entities:
            redactor = Redactor(verdict.pii_entities)
            redactor.body(ctx.body)  # before the cache key, the provider, and anything logged
            if redactor.counts:
                ctx.note(pii_redacted=dict(redactor.counts))  # counts per kind, never values
                if verdict.pii_restore and ctx.endpoint in GENERATION_ENDPOINTS:
                    ctx.extra["pii_restorer"] = redactor.restorer()
        ctx.extra["model_permit"] = lambda model_id: policies.model_permitted(facts, model_id, applicable)
        return None
