"""The control-plane admin API, served by Mangum on a BUFFERED function URL with AWS_IAM auth.

IAM authenticates the caller before Lambda runs (only principals allowed to invoke the URL reach
this code). Authorization is ours: the caller's ARN from the request context (set by AWS, never by
the client) is resolved to workspaces and roles through the admin grants (admin/access.py,
store/admins.py), and every operation checks its role before it runs. A principal with no grant
is refused with 403. Under `meterline dev` there is no IAM: the app is built with a local token
set (admin/local.py) and a request must carry one of its tokens as `Authorization: Bearer <token>`.
The caller's principal is recorded in the audit trail.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from meterline.admin.access import Access, candidates
from meterline.admin.local import LocalTokens
from meterline.admin.ops import OpError, Ops, audit_query, decision_query
from meterline.attribution import DIMENSIONS
from meterline.budgets.model import Budget, RateLimit
from meterline.config import Settings
from meterline.levers.routing import DEFAULT_THRESHOLD, RouteRule
from meterline.money import usd_to_micros

# Bounds of every body field, in one place: strings and lists are short (every value ends up in a
# DynamoDB item of at most 400 KB, and in the audit trail), numbers fit a DynamoDB number. What a
# value means (a model, a time zone, a percentage) is checked by the operation itself: 400.
Text = Annotated[str, Field(max_length=200)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Model = Annotated[str, Field(min_length=1, max_length=256)]
Models = Annotated[list[Model], Field(max_length=64)]
Int = Annotated[int, Field(ge=-(10**15), le=10**15)]
Usd = Annotated[str, Field(max_length=40)]


class WorkspaceIn(BaseModel):
    id: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    name: Name
    default_provider: Text | None = None
    unpriced: Text = "reject"
    timezone: Text = "UTC"


class KeyIn(BaseModel):
    member: str = Field(min_length=1, max_length=128)
    department: Text = "default"
    models: Models = []
    expires_in_days: float | None = None
    name: Text = ""
    scopes: Annotated[list[Text], Field(max_length=4)] = []


class ProviderIn(BaseModel):
    kind: Text | None = None
    base_url: Annotated[str, Field(max_length=2048)] | None = None
    catalog: Text | None = None
    region: Text | None = None  # bedrock
    api_version: Text | None = None  # azure
    deployments: Annotated[dict[Name, Model], Field(max_length=64)] | None = None  # azure: deployment -> model
    # encrypted with KMS at once; never echoed
    api_key: Annotated[str, Field(max_length=8192)] | None = Field(default=None, repr=False)


class AliasIn(BaseModel):
    model: Model
    fallbacks: Models = []


class RouteIn(BaseModel):
    models: Models = []
    cheap: Model | None = None
    strong: Model | None = None
    threshold: Int = DEFAULT_THRESHOLD
    mode: Text = "shadow"


class BudgetIn(BaseModel):
    monthly_usd: Usd | None = None
    daily_usd: Usd | None = None
    alerts: Annotated[list[Int], Field(max_length=20)] = [50, 75, 90, 100]
    throttle_at: Int | None = None
    throttle_rpm: Int | None = None
    on_exhaust: Text = "reject"
    clamp: bool = False
    downgrade_at: Int | None = None
    downgrade_to: Model | None = None


class LimitIn(BaseModel):
    rpm: Int | None = None
    rph: Int | None = None
    burst: Int | None = None
    tpm: Int | None = None


class PolicyIn(BaseModel):
    fail_open: bool | None = None
    loop_throttle_after: Int | None = None
    loop_reject_after: Int | None = None
    loop_window_s: Int | None = None
    key_rpm_default: Int | None = None


class CacheRuleIn(BaseModel):
    exact: bool = True
    ttl: Text | Int | None = None  # "1h", "15m" or seconds
    any_temperature: bool | None = None
    partition: Text | None = None
    namespace: str | None = Field(default=None, max_length=64)
    prompt_cache: bool | None = None
    prompt_cache_ttl: Text | None = None


class PricesSyncIn(BaseModel):
    # price data URL or file; default: genai-prices' published data
    source: Annotated[str, Field(max_length=2048)] | None = None
    accept: bool = False
    allow_removals: bool = False


class PriceIn(BaseModel):
    input: Usd
    output: Usd
    cache_read: Usd | None = None
    cache_write_5m: Usd | None = None
    cache_write_1h: Usd | None = None


# Bounds of query parameters (validated by FastAPI before any operation runs: a 422, never a 500).
MAX_SINCE_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_VERSION = 1_000_000
SINCE_MS = Query(0, ge=0, le=MAX_SINCE_MS)
ACTOR = Query(min_length=1, max_length=2048)
ACTOR_OPT = Query(None, min_length=1, max_length=2048)
MAX_PATH_PARAM = 200  # UTF-8 bytes: with its prefix, a name stays far below DynamoDB's 1,024-byte sort key
MAX_BODY = 256 * 1024  # admin documents are small; a DynamoDB item is at most 400 KB
WORKSPACE_PARAM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # as admin.ops.WORKSPACE_ID


def bounded_path(request: Request) -> None:
    """Every path parameter, in one place: a workspace id has its own form (it is part of every table
    key), any other name at most 256 printable characters (DynamoDB keys are at most 1 KiB)."""
    for name, value in request.path_params.items():
        if name == "workspace":
            if not WORKSPACE_PARAM.fullmatch(value):
                raise OpError(f"no workspace {value[:80]!r}", status=404)
        elif len(value.encode()) > MAX_PATH_PARAM or not value.isprintable() or not value.strip():
            raise OpError(f"{name} must be 1-{MAX_PATH_PARAM} bytes of printable characters")


class BodyCap:
    """Request bodies over MAX_BODY are refused with 413 before any route runs (read here whole:
    the admin API is buffered, so nothing streams)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raw = json.dumps({"error": {"message": f"the request body is over {MAX_BODY // 1024} KiB"}}).encode()
                await send({"type": "http.response.start", "status": 413, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]})
                await send({"type": "http.response.body", "body": raw})
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class GrantIn(BaseModel):
    principal: str = Field(min_length=1, max_length=2048)
    role: str = Field(pattern=r"^(read|admin|platform)$")
    workspace: str | None = Field(default=None, max_length=64)


def iam_caller(request: Request) -> str | None:
    """The IAM principal Lambda authenticated (function URL with AWS_IAM: requestContext.authorizer.iam)."""
    event = request.scope.get("aws.event") or {}
    iam = ((event.get("requestContext") or {}).get("authorizer") or {}).get("iam") or {}
    arn = iam.get("userArn")
    return arn if isinstance(arn, str) and arn.startswith("arn:") else None


def resolve_caller(request: Request, settings: Settings, local_tokens: LocalTokens | None) -> Access:
    """The caller's Access, or OpError 401/403. One Query per candidate principal (1-2)."""
    from meterline.store.admins import AdminGrantStore

    if local_tokens is not None:
        principal = local_tokens.principal_of(request.headers.get("authorization"))
        if principal is None:
            raise OpError("send the local admin token as 'Authorization: Bearer <token>' (the CLI reads it "
                          "from the dev state dir; `meterline admins token` prints it)", status=401)
        if principal == local_tokens.operator:
            return Access.direct(principal)  # the dev server's owner: the tables are theirs
        names = [principal]
    else:
        caller = iam_caller(request)
        if caller is None:
            raise OpError("no IAM principal in the request context (the admin URL uses AWS_IAM auth)", status=403)
        principal, names = caller, candidates(caller)
    grants = AdminGrantStore(settings).grants_of(names)
    access = Access.from_grants(principal, [(g.workspace, g.role) for g in grants])
    if not access.known:
        raise OpError(f"{principal} holds no Meterline admin grant (a platform admin grants one with "
                      "`meterline admins grant`)", status=403)
    return access


def create_admin_app(settings: Settings | None = None, local_tokens: LocalTokens | None = None) -> FastAPI:
    """The admin API. On Lambda the caller is the IAM principal; with `local_tokens` (meterline dev),
    the holder of a local admin token."""
    app = FastAPI(title="Meterline admin", docs_url=None, redoc_url=None, dependencies=[Depends(bounded_path)])
    app.add_middleware(BodyCap)
    state: dict[str, Settings] = {}

    def ops(request: Request) -> Ops:
        if "settings" not in state:
            state["settings"] = settings or Settings.from_env()
        access = request.scope.get("meterline.access")
        if access is None:
            access = request.scope["meterline.access"] = resolve_caller(request, state["settings"], local_tokens)
        return Ops(state["settings"], actor=access.principal, access=access)

    @app.exception_handler(OpError)
    async def op_error(request: Request, exc: OpError) -> JSONResponse:
        return JSONResponse({"error": {"message": str(exc)}}, status_code=exc.status)

    @app.get("/whoami")
    def whoami(request: Request) -> dict[str, Any]:
        return ops(request).whoami()

    @app.get("/admins")
    def list_admins(request: Request, workspace: str | None = None, principal: str | None = None) -> dict[str, Any]:
        return {"grants": ops(request).list_admins(workspace, principal)}

    @app.put("/admins")
    def grant_admin(body: GrantIn, request: Request) -> dict[str, Any]:
        return ops(request).grant_admin(body.principal, body.role, body.workspace)

    @app.delete("/admins", status_code=204)
    def revoke_admin(request: Request, principal: str, workspace: str | None = None) -> None:
        ops(request).revoke_admin(principal, workspace)

    @app.post("/workspaces", status_code=201)
    def create_workspace(body: WorkspaceIn, request: Request) -> dict[str, Any]:
        return ops(request).create_workspace(body.id, body.name, default_provider=body.default_provider,
                                             unpriced=body.unpriced, timezone=body.timezone)

    @app.post("/workspaces/{workspace}/keys", status_code=201)
    def create_key(workspace: str, body: KeyIn, request: Request) -> dict[str, Any]:
        return ops(request).create_key(workspace, body.member, body.department, tuple(body.models),
                                       body.expires_in_days, body.name, tuple(body.scopes))

    @app.get("/workspaces/{workspace}/keys")
    def list_keys(workspace: str, request: Request) -> dict[str, Any]:
        return {"keys": ops(request).list_keys(workspace)}

    @app.delete("/workspaces/{workspace}/keys/{key_id}", status_code=204)
    def revoke_key(workspace: str, key_id: str, request: Request) -> None:
        ops(request).revoke_key(workspace, key_id)

    @app.put("/workspaces/{workspace}/providers/{name}")
    def put_provider(workspace: str, name: str, body: ProviderIn, request: Request) -> dict[str, Any]:
        return ops(request).put_provider(workspace, name, secret=body.api_key, kind=body.kind,
                                         base_url=body.base_url, catalog=body.catalog, region=body.region,
                                         api_version=body.api_version, deployments=body.deployments)

    @app.get("/workspaces/{workspace}/providers")
    def list_providers(workspace: str, request: Request) -> dict[str, Any]:
        return {"providers": ops(request).list_providers(workspace)}

    @app.delete("/workspaces/{workspace}/providers/{name}", status_code=204)
    def delete_provider(workspace: str, name: str, request: Request) -> None:
        ops(request).delete_provider(workspace, name)

    @app.put("/workspaces/{workspace}/aliases/{name}")
    def set_alias(workspace: str, name: str, body: AliasIn, request: Request) -> dict[str, Any]:
        alias = ops(request).set_alias(workspace, name, body.model, tuple(body.fallbacks))
        return {"alias": alias.name, "model": alias.model, "fallbacks": list(alias.fallbacks)}

    @app.get("/workspaces/{workspace}/aliases")
    def list_aliases(workspace: str, request: Request) -> dict[str, Any]:
        return {"aliases": ops(request).list_aliases(workspace)}

    @app.delete("/workspaces/{workspace}/aliases/{name}", status_code=204)
    def delete_alias(workspace: str, name: str, request: Request) -> None:
        ops(request).delete_alias(workspace, name)

    @app.put("/workspaces/{workspace}/routes/{scope}")
    def set_route(workspace: str, scope: str, body: RouteIn, request: Request) -> dict[str, Any]:
        scope_type, _, scope_value = scope.partition(":")
        return ops(request).set_route(workspace, RouteRule(scope_type, scope_value, tuple(body.models), body.cheap,
                                                           body.strong, body.threshold, body.mode))

    @app.get("/workspaces/{workspace}/routes")
    def list_routes(workspace: str, request: Request) -> dict[str, Any]:
        return {"routes": ops(request).list_routes(workspace)}

    @app.delete("/workspaces/{workspace}/routes/{scope}", status_code=204)
    def delete_route(workspace: str, scope: str, request: Request) -> None:
        ops(request).delete_route(workspace, scope)

    @app.put("/workspaces/{workspace}/levers/{lever}/{scope}")
    def set_lever(workspace: str, lever: str, scope: str, body: dict[str, Any], request: Request) -> dict[str, Any]:
        return ops(request).set_lever(workspace, lever, scope, body)

    @app.get("/workspaces/{workspace}/levers/{lever}")
    def list_levers(workspace: str, lever: str, request: Request) -> dict[str, Any]:
        return {"settings": ops(request).list_levers(workspace, lever)}

    @app.delete("/workspaces/{workspace}/levers/{lever}/{scope}", status_code=204)
    def delete_lever(workspace: str, lever: str, scope: str, request: Request) -> None:
        ops(request).delete_lever(workspace, lever, scope)

    def https_only(source: str | None) -> str | None:
        # Deployed, the source is a public https URL: never a path on the function or a plain-http host.
        if source is not None and not source.startswith("https://"):
            raise OpError("source must be an https:// URL of published price data")
        return source

    @app.post("/prices/diff")
    def prices_diff(body: PricesSyncIn, request: Request) -> dict[str, Any]:
        out = ops(request).prices_diff(https_only(body.source))
        return {k: v for k, v in out.items() if k != "catalog"}

    @app.post("/prices/sync")
    def prices_sync(body: PricesSyncIn, request: Request) -> dict[str, Any]:
        return ops(request).prices_sync(https_only(body.source), accept=body.accept,
                                        allow_removals=body.allow_removals)

    @app.put("/workspaces/{workspace}/prices/{model:path}")
    def set_price(workspace: str, model: str, body: PriceIn, request: Request) -> dict[str, str]:
        ops(request).set_price(workspace, model, body.model_dump(exclude_none=True))
        return {"model": model}

    @app.put("/workspaces/{workspace}/budgets/{scope}")
    def set_budget(workspace: str, scope: str, body: BudgetIn, request: Request) -> dict[str, Any]:
        scope_type, _, scope_value = scope.partition(":")
        if scope_type == "workspace" and not scope_value:
            scope_value = workspace  # a bare `workspace` scope, as the CLI accepts it
        try:
            monthly = usd_to_micros(body.monthly_usd) if body.monthly_usd is not None else None
            daily = usd_to_micros(body.daily_usd) if body.daily_usd is not None else None
        except ValueError as exc:
            raise OpError(str(exc)) from exc
        return ops(request).set_budget(workspace, Budget(
            scope_type, scope_value, monthly, daily, tuple(body.alerts), body.throttle_at, body.throttle_rpm,
            body.on_exhaust, body.clamp, body.downgrade_at, body.downgrade_to))

    @app.get("/workspaces/{workspace}/budgets")
    def list_budgets(workspace: str, request: Request) -> dict[str, Any]:
        return {"budgets": ops(request).list_budgets(workspace)}

    @app.delete("/workspaces/{workspace}/budgets/{scope}", status_code=204)
    def delete_budget(workspace: str, scope: str, request: Request) -> None:
        ops(request).delete_budget(workspace, scope)

    @app.put("/workspaces/{workspace}/limits/{subject}")
    def set_limit(workspace: str, subject: str, body: LimitIn, request: Request) -> dict[str, Any]:
        subject_type, _, subject_value = subject.partition(":")
        return ops(request).set_limit(workspace, RateLimit(subject_type, subject_value, body.rpm, body.rph,
                                                           body.burst, body.tpm))

    @app.put("/workspaces/{workspace}/enforcement")
    def set_policy(workspace: str, body: PolicyIn, request: Request) -> dict[str, Any]:
        return ops(request).set_policy(workspace, **body.model_dump(exclude_none=True))

    @app.put("/workspaces/{workspace}/policies/{policy_id}")
    def set_request_policy(workspace: str, policy_id: str, request: Request,
                           body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        if body.get("id", policy_id) != policy_id:
            raise OpError("the id in the body differs from the one in the path")
        return ops(request).set_request_policy(workspace, {**body, "id": policy_id})

    @app.get("/workspaces/{workspace}/policies")
    def list_request_policies(workspace: str, request: Request) -> dict[str, Any]:
        return {"policies": ops(request).list_request_policies(workspace)}

    @app.delete("/workspaces/{workspace}/policies/{policy_id}", status_code=204)
    def delete_request_policy(workspace: str, policy_id: str, request: Request) -> None:
        ops(request).delete_request_policy(workspace, policy_id)

    @app.post("/workspaces/{workspace}/policies/test")
    def test_request_policies(workspace: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return ops(request).test_request_policies(workspace, body)

    @app.get("/workspaces/{workspace}/spend")
    def spend(workspace: str, request: Request, by: str = "feature", period: str = "today") -> dict[str, Any]:
        if by not in DIMENSIONS or by == "session":
            raise OpError(f"by must be one of {[d for d in DIMENSIONS if d != 'session']}")
        return ops(request).spend(workspace, by, period)

    @app.put("/workspaces/{workspace}/cache/{scope}")
    def set_cache_rule(workspace: str, scope: str, body: CacheRuleIn, request: Request) -> dict[str, Any]:
        fields = body.model_dump(exclude_none=True)
        if "ttl" in fields:
            fields["ttl_s"] = fields.pop("ttl")
        return ops(request).set_cache_rule(workspace, scope, **fields)

    @app.get("/workspaces/{workspace}/cache")
    def list_cache_rules(workspace: str, request: Request) -> dict[str, Any]:
        return {"rules": ops(request).list_cache_rules(workspace)}

    @app.delete("/workspaces/{workspace}/cache/{scope}", status_code=204)
    def delete_cache_rule(workspace: str, scope: str, request: Request) -> None:
        ops(request).delete_cache_rule(workspace, scope)

    @app.put("/workspaces/{workspace}/templates/{name}")
    def put_template(workspace: str, name: str, body: dict[str, Any], request: Request) -> dict[str, Any]:
        return ops(request).put_template(workspace, name, body)

    @app.get("/workspaces/{workspace}/templates")
    def list_templates(workspace: str, request: Request) -> dict[str, Any]:
        return {"templates": ops(request).list_templates(workspace)}

    @app.get("/workspaces/{workspace}/templates/{name}")
    def get_template(workspace: str, name: str, request: Request,
                     version: int | None = Query(None, ge=1, le=MAX_VERSION)) -> dict[str, Any]:
        return ops(request).get_template(workspace, name, version)

    @app.get("/workspaces/{workspace}/savings")
    def savings(workspace: str, request: Request, by: str = "lever", period: str = "month") -> dict[str, Any]:
        return ops(request).savings(workspace, by, period)

    @app.get("/workspaces/{workspace}/audit")
    def audit_trail(workspace: str, request: Request, since_ms: int = SINCE_MS, actor: str | None = ACTOR_OPT,
                    limit: int = 200, decisions: bool = False) -> dict[str, Any]:
        limit = min(max(limit, 1), 1000)
        if decisions:  # per-request policy and budget decisions (from the ledger)
            return {"records": decision_query(ops(request), workspace, since_ms=since_ms, limit=limit)}
        return {"records": audit_query(ops(request), workspace, since_ms=since_ms, actor=actor, limit=limit)}

    @app.get("/audit")
    def audit_by_actor(request: Request, actor: str = ACTOR, since_ms: int = SINCE_MS,
                       limit: int = 200) -> dict[str, Any]:
        return {"records": audit_query(ops(request), None, since_ms=since_ms, actor=actor,
                                       limit=min(max(limit, 1), 1000))}

    @app.get("/workspaces/{workspace}/waste")
    def waste(workspace: str, request: Request, period: str = "today", by: str | None = None) -> dict[str, Any]:
        return ops(request).waste(workspace, period, by)

    @app.get("/workspaces/{workspace}/exports/focus")
    def export_focus(workspace: str, request: Request, month: str, by: str = "all") -> Response:
        result = ops(request).export_focus(workspace, month, by)
        return Response(result.csv(), media_type="text/csv",
                        headers={"content-disposition": f'attachment; filename="focus-{workspace}-{month}.csv"'})

    return app
