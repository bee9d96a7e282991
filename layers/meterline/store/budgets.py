"""Budgets table: definitions, atomic counters, rate windows, loop counters and alert markers.

Keys (see schema.BUDGETS):
    pk = <ws>                       sk = "budget#<scope>" | "limit#<subject>" | "policy"   definitions
    pk = <ws>#budget#<scope>        sk = "M#<yyyy-mm>"        spend counter for a budget and month:
        committed (= spent + reserved), reserved, spent, requests (micro-dollars / counts),
        dc_<yyyy-mm-dd> / ds_<yyyy-mm-dd>   the day's committed / spent (daily caps, same item),
        l_<request id> = {w, exp, day}      one lease per in-flight reservation,
        tm, tn                              a throttle stage's minute window: the epoch minute and the
                                            requests reserved in it (counted by the reservation itself),
    pk = <ws>#rl#<subject>          sk = "m#<epoch minute>" | "h#<epoch hour>"   rate windows (TTL):
        n (requests), tk (tokens), s_<second> (burst)
    pk = <ws>#loop#<session>        sk = "<fingerprint>#<window>"   agent-loop counter (TTL)
    pk = "alert"                    sk = "<ws>#<scope>#<period>#<threshold>"   alert outbox:
        status pending | claimed | sent, claimed_until, spent, cap, created_at

Access patterns:
    definitions(ws)        Query pk=<ws>                       (cached per workspace with the config)
    reserve                UpdateItem ADD ..., SET lease, condition committed <= cap - worst (per cap)
                           - DynamoDB conditions cannot add, so `committed` carries spent + reserved and
                           the caller passes cap - worst; a missing item is the same as zero, so a
                           budget's first concurrent requests are bound exactly like the later ones.
    settle / release       UpdateItem REMOVE lease ADD delta, condition the lease exists (exactly once)
    sweep                  UpdateItem REMOVE expired leases ADD -amounts, condition they all still exist
    rate / loop windows    UpdateItem ADD n, condition n < limit (a rate window: ADD n :N, tk :T for a quota
                           block of N requests, condition n <= rpm - N, tk <= tpm - T: budgets/quota.py)
    throttle window        part of the reservation's UpdateItem (ADD tn, condition tm = minute; or SET
                           tm, tn = 1, condition tm < minute): no write of its own
    alerts                 PutItem (condition: new) | Query pk="alert" | UpdateItem claim (condition)

Every hot-path operation is a single-item conditional write: DynamoDB serializes those per item
without the conflict errors that transactions on a hot item produce under heavy concurrency.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from meterline.budgets import quota
from meterline.budgets.model import Budget, Enforcement, Policy, RateLimit
from meterline.config import Settings
from meterline.store import aws
from meterline.store.codec import from_item, paginate, to_item
from meterline.store.ddb_http import DynamoError, DynamoHttp
from meterline.store.schema import BUDGETS

log = logging.getLogger("meterline.budgets")
LEASE_PREFIX = "l_"
# A cancelled reservation's tombstone (`x_<request id>` = expiry): a reserve that was sent, failed on
# the client's side and is applied late by the server finds it and refuses, so nothing stays held.
TOMBSTONE_PREFIX = "x_"
ALERT_PK = "alert"


def counter_key(workspace: str, scope: str, month: str) -> dict[str, Any]:
    return {"pk": {"S": f"{workspace}#budget#{scope}"}, "sk": {"S": f"M#{month}"}}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _budget_item(workspace: str, budget: Budget) -> dict[str, Any]:
    return {"pk": workspace, "sk": f"budget#{budget.scope}", "scope_type": budget.scope_type,
            "scope_value": budget.scope_value, "monthly_micros": budget.monthly_micros,
            "daily_micros": budget.daily_micros, "alerts": list(budget.alerts), "throttle_at": budget.throttle_at,
            "throttle_rpm": budget.throttle_rpm, "on_exhaust": budget.on_exhaust, "clamp": budget.clamp,
            "downgrade_at": budget.downgrade_at, "downgrade_to": budget.downgrade_to}


def _budget_from(item: dict[str, Any]) -> Budget:
    return Budget(item["scope_type"], item["scope_value"], item.get("monthly_micros"), item.get("daily_micros"),
                  tuple(item.get("alerts", [])), item.get("throttle_at"), item.get("throttle_rpm"),
                  item.get("on_exhaust", "reject"), bool(item.get("clamp", False)), item.get("downgrade_at"),
                  item.get("downgrade_to"))


def expired_entries(item: dict[str, Any], now: float) -> tuple[dict[str, Any], list[str]]:
    """A counter item's expired leases {attr: lease} and expired tombstones [attr]."""
    leases = {k: v for k, v in item.items() if k.startswith(LEASE_PREFIX) and int(v["exp"]) < now}
    tombs = [k for k, v in item.items() if k.startswith(TOMBSTONE_PREFIX) and int(v) < now]
    return leases, tombs


def _policy_from(workspace: str, item: dict[str, Any] | None) -> Policy:
    if item is None:
        return Policy()
    raw = json.loads(item["policy"])
    known = {k: v for k, v in raw.items() if k in Policy.__dataclass_fields__}
    try:
        policy = Policy(**known)
        policy.validate()
        return policy
    except (TypeError, ValueError):
        log.error("invalid_policy_ignored", extra={"workspace": workspace})
        return Policy(fail_open=raw.get("fail_open") is True)


@dataclass(frozen=True)
class Reservation:
    budget: Budget
    worst: int
    month: str
    day: str
    # The counter after the reservation: committed, reserved, spent (= committed - reserved), requests,
    # dc_<day> and this request's lease, not other requests' leases (UPDATED_NEW); the whole item when
    # _needs_whole_counter, or on a retried reserve.
    state: dict[str, Any]
    lease_expires: int = 0


def _needs_whole_counter(budget: Budget, worst: int) -> bool:
    """Whether a reservation must return the whole counter item (ALL_NEW) rather than what it changed
    (UPDATED_NEW: committed, reserved, the day's committed, requests). ALL_NEW carries every in-flight
    lease of the item, O(concurrent requests) bytes to send and parse per reservation (moto: 538 vs
    138 ms per call at 100-200 leases on a loaded machine), so it is asked for only when the stage
    reads a figure the reservation does not change: the day's spent of a daily-only downgrade rung,
    or anything at all when the worst case is 0 (nothing changes)."""
    return worst <= 0 or (budget.downgrade_at is not None and budget.monthly_micros is None)


def _reserved_state(attributes: dict[str, Any]) -> dict[str, Any]:
    state = from_item(attributes)
    if "spent" not in state:  # UPDATED_NEW: every operation keeps committed = spent + reserved
        state["spent"] = int(state.get("committed", 0)) - int(state.get("reserved", 0))
    return state


def _with_minute(request: dict[str, Any], conditions: list[str], window: int, *, fresh: bool) -> dict[str, Any]:
    """The reservation `request` that also counts the request in minute `window`: ADD tn into the
    item's window when it is `window`, or (fresh) start it, when the item's window is older."""
    if fresh:
        update = "SET #lease = :lease, tm = :min, tn = :one ADD committed :w, reserved :w, #dc :w, requests :one"
        window_condition = "(attribute_not_exists(tm) OR tm < :min)"
    else:
        update = "SET #lease = :lease ADD committed :w, reserved :w, #dc :w, requests :one, tn :one"
        window_condition = "tm = :min"
    return {**request, "UpdateExpression": update,
            "ConditionExpression": " AND ".join([*conditions, window_condition]),
            "ExpressionAttributeValues": {**request["ExpressionAttributeValues"], ":min": _n(window)}}


def _fits(budget: Budget, old: dict[str, Any], day: str, worst: int) -> bool:
    """Whether the reservation's cap conditions held on the counter `old` (as DynamoDB evaluated them)."""
    if not budget.hard:
        return True
    for cap, attr in ((budget.monthly_micros, "committed"), (budget.daily_micros, f"dc_{day}")):
        if cap is None:
            continue
        value = old.get(attr)
        if value is None:
            if worst > cap:
                return False
        elif int(value) > cap - worst:
            return False
    return True


@dataclass(frozen=True)
class Refused:
    budget: Budget
    period: str  # "month" | "day"
    committed: int  # what was committed (spent + reserved) when it was refused
    cap: int


class BudgetStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.table = settings.table(BUDGETS)
        # (workspace, scope, month) -> the minute window the counter held at this process's last
        # reservation that counted one (see `reserve`): picks the form of the next write.
        self._minutes: dict[tuple[str, str, str], int] = {}
        # (workspace, subject) -> this process's rate-limit quota for the subject's current minute.
        self._quotas: dict[tuple[str, str], quota.Quota] = {}
        self.window_writes = 0  # minute-window writes this process made (bench/overhead.py reports them)

    @property
    def _ddb(self) -> Any:
        return aws.client("dynamodb", self.settings)

    # -- definitions (control plane; boto3) ------------------------------------------------------
    def put_budget(self, workspace: str, budget: Budget) -> None:
        budget.validate()
        self._ddb.put_item(TableName=self.table, Item=to_item(_budget_item(workspace, budget)))

    def seed_counter(self, workspace: str, scope: str, month: str, day: str, spent_month: int,
                     spent_day: int) -> bool:
        """Start a budget's month counter from what the scope already spent this month (a budget
        created mid-month); only when the counter does not exist yet (it then tracks from here)."""
        if spent_month <= 0 and spent_day <= 0:
            return False
        try:
            self._ddb.update_item(
                TableName=self.table, Key=counter_key(workspace, scope, month),
                UpdateExpression="SET seeded_from_rollups = :m ADD committed :m, spent :m, #dc :d, #ds :d, "
                                 "reserved :z",
                ConditionExpression="attribute_not_exists(committed)",
                ExpressionAttributeNames={"#dc": f"dc_{day}", "#ds": f"ds_{day}"},
                ExpressionAttributeValues={":m": _n(spent_month), ":d": _n(spent_day), ":z": _n(0)})
            return True
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False

    def delete_budget(self, workspace: str, scope: str) -> None:
        self._ddb.delete_item(TableName=self.table, Key=to_item({"pk": workspace, "sk": f"budget#{scope}"}))

    def put_limit(self, workspace: str, limit: RateLimit) -> None:
        self._ddb.put_item(TableName=self.table, Item=to_item({
            "pk": workspace, "sk": f"limit#{limit.subject}", "subject_type": limit.subject_type,
            "subject_value": limit.subject_value, "rpm": limit.rpm, "rph": limit.rph, "burst": limit.burst,
            "tpm": limit.tpm}))

    def delete_limit(self, workspace: str, subject: str) -> bool:
        """Remove a rate limit; False when there was none."""
        old = self._ddb.delete_item(TableName=self.table, Key=to_item({"pk": workspace, "sk": f"limit#{subject}"}),
                                    ReturnValues="ALL_OLD")
        return "Attributes" in old

    def delete_budget_if_exists(self, workspace: str, scope: str) -> bool:
        old = self._ddb.delete_item(TableName=self.table, Key=to_item({"pk": workspace, "sk": f"budget#{scope}"}),
                                    ReturnValues="ALL_OLD")
        return "Attributes" in old

    def put_policy(self, workspace: str, policy: Policy) -> None:
        self._ddb.put_item(TableName=self.table, Item=to_item({
            "pk": workspace, "sk": "policy", "policy": json.dumps(policy.__dict__, sort_keys=True)}))

    def definitions(self, workspace: str) -> Enforcement:
        kwargs: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": "pk = :ws",
                                  "ExpressionAttributeValues": {":ws": {"S": workspace}}, "ConsistentRead": True}
        items = list(paginate(self._ddb.query, **kwargs))
        budgets = tuple(_budget_from(i) for i in items if i["sk"].startswith("budget#"))
        limits = {}
        for i in items:
            if i["sk"].startswith("limit#"):
                limit = RateLimit(i["subject_type"], i["subject_value"], i.get("rpm"), i.get("rph"), i.get("burst"),
                                  i.get("tpm"))
                try:
                    limit.validate()
                except ValueError:
                    # Written before validation existed (ops validates every write): the data plane
                    # keeps working on the defaults instead of failing every request.
                    log.error("invalid_limit_ignored", extra={"workspace": workspace, "subject": limit.subject})
                    continue
                limits[limit.subject] = limit
        policy_item = next((i for i in items if i["sk"] == "policy"), None)
        return Enforcement(budgets, limits, _policy_from(workspace, policy_item))

    def counter(self, workspace: str, scope: str, month: str) -> dict[str, Any]:
        item = self._ddb.get_item(TableName=self.table, Key=counter_key(workspace, scope, month),
                                  ConsistentRead=True).get("Item")
        return from_item(item) if item else {}

    # -- reservations (data plane; lean async client) --------------------------------------------
    async def reserve(self, client: DynamoHttp, workspace: str, budget: Budget, month: str, day: str,
                      request_id: str, worst: int, lease_s: int, now: float,
                      count_minute: bool = False) -> Reservation | Refused:
        """Reserve `worst` on the budget's month counter under the request's lease. `count_minute`
        (a budget with a throttle stage) also counts the request in the counter's minute window
        (`tm` = epoch minute, `tn` = requests reserved in it), in the same write: its ordinal in the
        minute is the reservation's state["tn"]. Every reserved request of such a budget is counted,
        whether or not the stage has begun: a minute that crosses the threshold already holds the
        requests that crossed it, so the stage admits at most `throttle_rpm` in that minute too
        (counting only once throttled let `throttle_rpm` more through on top)."""
        names = {"#lease": LEASE_PREFIX + request_id, "#dc": f"dc_{day}", "#tomb": TOMBSTONE_PREFIX + request_id}
        values: dict[str, Any] = {
            ":w": _n(worst), ":one": _n(1),
            ":lease": {"M": {"w": _n(worst), "exp": _n(int(now) + lease_s), "day": {"S": day}}},
        }
        # Idempotent under the client's retries: a retry of an applied reservation finds its own lease;
        # a reservation this request already cancelled (a late delivery) is never applied.
        conditions = ["attribute_not_exists(#lease)", "attribute_not_exists(#tomb)"]
        if budget.hard:
            caps = (("month", budget.monthly_micros, "committed"), ("day", budget.daily_micros, "#dc"))
            for period, cap, attr in caps:
                if cap is None:
                    continue
                values[f":lim_{period}"] = _n(cap - worst)
                if worst > cap:
                    # Cannot fit even on a fresh counter: the write fails, and its refusal reports what
                    # is committed (a clamp and the caller's message need the real figure, not 0).
                    conditions.append(f"{attr} <= :lim_{period}")
                else:
                    conditions.append(f"(attribute_not_exists({attr}) OR {attr} <= :lim_{period})")
        expires = int(now) + lease_s
        key = counter_key(workspace, budget.scope, month)
        request = {
            "TableName": self.table, "Key": key,
            "UpdateExpression": "SET #lease = :lease ADD committed :w, reserved :w, #dc :w, requests :one",
            "ConditionExpression": " AND ".join(conditions), "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW" if _needs_whole_counter(budget, worst) else "UPDATED_NEW",
        }
        minute = int(now // 60)
        memo = (workspace, budget.scope, month)
        # The minute window's two forms: count into the item's current minute, or start a new one.
        # Guessed from the last answer this process saw for the counter; a wrong guess costs a retry
        # (once a minute per process), never a wrong count: each form is conditional on the window.
        window = minute if self._minutes.get(memo) == minute else None
        swept = False
        for _ in range(6):
            if count_minute:
                request = _with_minute(request, conditions, window if window is not None else minute,
                                       fresh=window is None)
            try:
                result = await client.call("UpdateItem", request)
                state = _reserved_state(result.get("Attributes", {}))
                if count_minute:
                    self._remember_minute(memo, int(state.get("tm", window if window is not None else minute)))
                return Reservation(budget, worst, month, day, state, expires)
            except DynamoError as exc:
                if exc.code != "ConditionalCheckFailedException":
                    raise
                old = from_item(exc.body.get("Item", {}))
                if TOMBSTONE_PREFIX + request_id in old:
                    raise DynamoError("ReservationCancelled", "this request's reservation was cancelled", 0) from exc
                if LEASE_PREFIX + request_id in old:
                    return Reservation(budget, worst, month, day, old, expires)  # our retry: already applied
                if count_minute and _fits(budget, old, day, worst):
                    # The caps held, so the minute window refused: count into the item's minute if it is
                    # this one or a later one (another instance's clock ran ahead), else start this one.
                    stored = old.get("tm")
                    window = int(stored) if stored is not None and int(stored) >= minute else None
                    continue
                # A crashed call's lease may be what blocks us: release expired leases, then retry once.
                if not swept and await self._sweep(client, workspace, budget.scope, month, old, now):
                    swept = True
                    continue
                return self._refusal(budget, old, day, worst)
        raise DynamoError("ReserveContended", "the budget's minute window kept changing", 0)

    def _remember_minute(self, memo: tuple[str, str, str], minute: int) -> None:
        if len(self._minutes) >= 4096:  # bounded: one entry per throttled budget and month
            self._minutes.clear()
        self._minutes[memo] = minute

    @staticmethod
    def _refusal(budget: Budget, old: dict[str, Any], day: str, worst: int) -> Refused:
        monthly = int(old.get("committed", 0))
        daily = int(old.get(f"dc_{day}", 0))
        if budget.daily_micros is not None and daily + worst > budget.daily_micros and not (
                budget.monthly_micros is not None and monthly + worst > budget.monthly_micros
                and budget.monthly_micros - monthly <= budget.daily_micros - daily):
            return Refused(budget, "day", daily, budget.daily_micros)
        return Refused(budget, "month", monthly, budget.monthly_micros or 0)

    async def settle(self, client: DynamoHttp, workspace: str, reservation: Reservation, request_id: str,
                     actual: int, now: float | None = None) -> dict[str, Any]:
        """Replace a reservation by the actual cost (0 = release), exactly once per lease. A missing
        lease means either our own retried settle already applied (while the lease is still valid)
        or the sweeper released it after it expired (the call outlived its lease): only then is the
        actual spend added on its own."""
        delta = actual - reservation.worst
        names = {"#lease": LEASE_PREFIX + request_id, "#dc": f"dc_{reservation.day}", "#ds": f"ds_{reservation.day}"}
        key = counter_key(workspace, reservation.budget.scope, reservation.month)
        try:
            result = await client.call("UpdateItem", {
                "TableName": self.table, "Key": key,
                "UpdateExpression": "REMOVE #lease ADD committed :delta, reserved :negw, spent :a, #dc :delta, #ds :a",
                "ConditionExpression": "attribute_exists(#lease)",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": {":delta": _n(delta), ":negw": _n(-reservation.worst), ":a": _n(actual)},
                "ReturnValues": "UPDATED_NEW", "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            })
        except DynamoError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
            if (now if now is not None else time.time()) < reservation.lease_expires:
                return from_item(exc.body.get("Item", {}))  # our own settle, retried: already applied
            names.pop("#lease")
            result = await client.call("UpdateItem", {
                "TableName": self.table, "Key": key,
                "UpdateExpression": "ADD committed :a, spent :a, #dc :a, #ds :a",
                "ExpressionAttributeNames": names, "ExpressionAttributeValues": {":a": _n(actual)},
                "ReturnValues": "UPDATED_NEW",
            }, idempotent=False)
        return from_item(result.get("Attributes", {}))

    async def cancel(self, client: DynamoHttp, workspace: str, budget: Budget, month: str, day: str,
                     request_id: str, worst: int, lease_s: int, now: float) -> str:
        """Undo a reservation whose outcome is unknown (sent, but no answer came back): release its
        lease if it was applied, else leave a tombstone so that a late delivery is refused.
        Keyed by the request's own lease, so it is safe whatever the reserve's fate; idempotent.
        Returns "released", "blocked" (tombstone written) or "already" (cancelled before)."""
        key = counter_key(workspace, budget.scope, month)
        lease, tomb = LEASE_PREFIX + request_id, TOMBSTONE_PREFIX + request_id
        for _ in range(4):
            try:
                await client.call("UpdateItem", {
                    "TableName": self.table, "Key": key,
                    "UpdateExpression": "REMOVE #lease ADD committed :negw, reserved :negw, #dc :negw",
                    "ConditionExpression": "attribute_exists(#lease)",
                    "ExpressionAttributeNames": {"#lease": lease, "#dc": f"dc_{day}"},
                    "ExpressionAttributeValues": {":negw": _n(-worst)},
                })
                return "released"
            except DynamoError as exc:
                if exc.code != "ConditionalCheckFailedException":
                    raise
            try:
                await client.call("UpdateItem", {
                    "TableName": self.table, "Key": key,
                    "UpdateExpression": "SET #tomb = :exp ADD tombstones :one",
                    "ConditionExpression": "attribute_not_exists(#lease) AND attribute_not_exists(#tomb)",
                    "ExpressionAttributeNames": {"#lease": lease, "#tomb": tomb},
                    "ExpressionAttributeValues": {":exp": _n(int(now) + lease_s), ":one": _n(1)},
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                })
                return "blocked"
            except DynamoError as exc:
                if exc.code != "ConditionalCheckFailedException":
                    raise
                if tomb in from_item(exc.body.get("Item", {})):
                    return "already"
                # The reservation landed in between: release it (next round).
        raise DynamoError("CancelContended", "the reservation kept changing while being cancelled", 0)

    async def _sweep(self, client: DynamoHttp, workspace: str, scope: str, month: str, item: dict[str, Any],
                     now: float) -> bool:
        expired, tombs = expired_entries(item, now)
        if not expired and not tombs:
            return False
        await self.release_leases(client, workspace, scope, month, expired, tombs)
        return bool(expired)

    async def release_leases(self, client: DynamoHttp, workspace: str, scope: str, month: str,
                             leases: dict[str, dict[str, Any]], tombstones: list[str] | None = None) -> None:
        names, removes, conditions = {}, [], []
        per_day: dict[str, int] = {}
        total = 0
        for i, attr in enumerate(tombstones or []):
            names[f"#t{i}"] = attr
            removes.append(f"#t{i}")
            conditions.append(f"attribute_exists(#t{i})")
        for i, (attr, lease) in enumerate(leases.items()):
            names[f"#l{i}"] = attr
            removes.append(f"#l{i}")
            conditions.append(f"attribute_exists(#l{i})")
            total += int(lease["w"])
            per_day[lease["day"]] = per_day.get(lease["day"], 0) + int(lease["w"])
        values = {":neg": _n(-total)}
        adds = ["committed :neg", "reserved :neg"]
        if tombstones:
            values[":negt"] = _n(-len(tombstones))
            adds.append("tombstones :negt")
        for j, (day, amount) in enumerate(per_day.items()):
            names[f"#d{j}"] = f"dc_{day}"
            values[f":d{j}"] = _n(-amount)
            adds.append(f"#d{j} :d{j}")
        try:
            await client.call("UpdateItem", {
                "TableName": self.table, "Key": counter_key(workspace, scope, month),
                "UpdateExpression": f"REMOVE {', '.join(removes)} ADD {', '.join(adds)}",
                "ConditionExpression": " AND ".join(conditions),
                "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
            })
        except DynamoError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise  # someone else settled or swept one of them first: nothing to do

    # -- rate windows and loop counters ----------------------------------------------------------
    async def rate_window(self, client: DynamoHttp, workspace: str, limit: RateLimit, tokens: int,
                          now: float) -> tuple[bool, dict[str, Any]]:
        """Count one request (and its tokens) in the subject's minute window; (allowed, window state).
        A process with steady traffic for the subject claims blocks of requests ahead and admits from
        them without a write (budgets/quota.py: never more than the limit, a refusal is exact)."""
        if limit.tpm is not None and tokens > limit.tpm:
            return False, {"n": 0, "tk": 0}
        block = self._quota(workspace, limit, now) if quota.eligible(limit) else None
        size = 1
        if block is not None:
            taken = block.take(tokens)
            if taken is None and block.claiming is not None:
                await asyncio.shield(block.claiming)  # a block for this subject is on its way: wait for it
                taken = block.take(tokens)
            if taken is not None:
                return True, taken
            size = block.next_block(tokens)
        waiters: asyncio.Future[None] | None = None
        if block is not None and size > 1 and block.claiming is None:
            waiters = block.claiming = asyncio.get_running_loop().create_future()
        try:
            allowed, state = await self._count_window(client, workspace, limit, tokens, now, size)
        finally:
            if waiters is not None:
                assert block is not None
                block.claiming = None
                waiters.set_result(None)
        if block is not None:
            if allowed:
                state = {**state, **block.claimed(size, tokens, state)}
            else:
                block.seen(state)
                if size > 1 and quota.fits_alone(limit, state, tokens):  # the block did not fit: this one may
                    allowed, state = await self._count_window(client, workspace, limit, tokens, now, 1)
                    if allowed:
                        state = {**state, **block.claimed(1, tokens, state)}
        if allowed and limit.rph is not None:
            hour = int(now // 3600)
            allowed, hour_state = await self._counted(client, {
                "TableName": self.table,
                "Key": {"pk": {"S": f"{workspace}#rl#{limit.subject}"}, "sk": {"S": f"h#{hour}"}},
                "UpdateExpression": "ADD n :one SET expires_at = :ttl",
                "ConditionExpression": "attribute_not_exists(n) OR n < :rph",
                "ExpressionAttributeValues": {":one": _n(1), ":rph": _n(limit.rph), ":ttl": _n((hour + 2) * 3600)},
                "ReturnValues": "ALL_NEW", "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            })
            state = {**state, "hour_n": hour_state.get("n", 0), "hour_limited": not allowed}
        return allowed, state

    async def _count_window(self, client: DynamoHttp, workspace: str, limit: RateLimit, tokens: int, now: float,
                            size: int) -> tuple[bool, dict[str, Any]]:
        """Count `size` requests (`size` x `tokens` tokens) in the subject's minute window, if they fit."""
        self.window_writes += 1
        minute = int(now // 60)
        names: dict[str, str] = {}
        values: dict[str, Any] = {":one": _n(size), ":tk": _n(tokens * size), ":ttl": _n((minute + 2) * 60)}
        adds = ["n :one", "tk :tk"]
        conditions = []
        if limit.rpm is not None:
            values[":rpm"] = _n(limit.rpm - size)
            conditions.append("(attribute_not_exists(n) OR n <= :rpm)")
        if limit.tpm is not None:
            values[":tpm"] = _n(limit.tpm - tokens * size)
            conditions.append("(attribute_not_exists(tk) OR tk <= :tpm)")
        if limit.burst is not None:  # never with a block (quota.eligible)
            names["#s"] = f"s_{int(now) % 60}"
            values[":burst"] = _n(limit.burst)
            adds.append("#s :one")
            conditions.append("(attribute_not_exists(#s) OR #s < :burst)")
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": {"S": f"{workspace}#rl#{limit.subject}"}, "sk": {"S": f"m#{minute}"}},
            "UpdateExpression": f"ADD {', '.join(adds)} SET expires_at = :ttl",
            "ExpressionAttributeValues": values, "ReturnValues": "ALL_NEW",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if names:
            request["ExpressionAttributeNames"] = names
        if conditions:
            request["ConditionExpression"] = " AND ".join(conditions)
        return await self._counted(client, request)  # a count: never sent twice

    def _quota(self, workspace: str, limit: RateLimit, now: float) -> quota.Quota:
        """This process's quota for the subject's window at `now`, this request counted in its traffic
        (a new quota for a new minute or a changed limit: units claimed under the old one are not
        used under the new one, and a claim still on its way lands in the old one)."""
        key = (workspace, limit.subject)
        minute = int(now // 60)
        found = self._quotas.get(key)
        if found is None or found.minute != minute or found.limit != limit:
            if len(self._quotas) >= 4096:  # bounded: one entry per subject this process serves
                self._quotas.clear()
            traffic = found.traffic if found is not None else quota.Traffic()
            found = self._quotas[key] = quota.Quota(limit, minute, traffic)
        found.traffic.observe(now)
        return found

    async def loop_count(self, client: DynamoHttp, workspace: str, session: str, fingerprint: str,
                         window_s: int, now: float) -> dict[str, Any]:
        window = int(now // window_s)
        result = await client.call("UpdateItem", {
            "TableName": self.table,
            "Key": {"pk": {"S": f"{workspace}#loop#{session}"}, "sk": {"S": f"{fingerprint}#{window}"}},
            "UpdateExpression": "ADD n :one SET expires_at = :ttl",
            "ExpressionAttributeValues": {":one": _n(1), ":ttl": _n((window + 2) * window_s)},
            "ReturnValues": "ALL_NEW",
        }, idempotent=False)
        return from_item(result.get("Attributes", {}))

    async def loop_pass(self, client: DynamoHttp, workspace: str, session: str, fingerprint: str, window_s: int,
                        interval_s: int, now: float) -> bool:
        """While a session is throttled, let one request through per interval."""
        window = int(now // window_s)
        try:
            await client.call("UpdateItem", {
                "TableName": self.table,
                "Key": {"pk": {"S": f"{workspace}#loop#{session}"}, "sk": {"S": f"{fingerprint}#{window}"}},
                "UpdateExpression": "SET last_pass = :now",
                "ConditionExpression": "attribute_not_exists(last_pass) OR last_pass <= :since",
                "ExpressionAttributeValues": {":now": _n(int(now)), ":since": _n(int(now) - interval_s)},
            }, idempotent=False)
            return True
        except DynamoError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
            return False

    @staticmethod
    async def _counted(client: DynamoHttp, request: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        try:
            result = await client.call("UpdateItem", request, idempotent=False)  # a count: never sent twice
            return True, from_item(result.get("Attributes", {}))
        except DynamoError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
            return False, from_item(exc.body.get("Item", {}))

    # -- alert outbox ----------------------------------------------------------------------------
    async def record_alert(self, client: DynamoHttp, workspace: str, budget: Budget, period: str, threshold: int,
                           spent: int, cap: int) -> None:
        """Durably note a threshold crossing, once per budget, period and threshold."""
        try:
            await client.call("PutItem", {
                "TableName": self.table,
                "Item": {"pk": {"S": ALERT_PK}, "sk": {"S": f"{workspace}#{budget.scope}#{period}#{threshold}"},
                         "workspace": {"S": workspace}, "scope": {"S": budget.scope}, "period": {"S": period},
                         "threshold": _n(threshold), "spent": _n(spent), "cap": _n(cap),
                         "status": {"S": "pending"}, "created_at": _n(int(time.time())),
                         "expires_at": _n(int(time.time()) + 120 * 86400)},
                "ConditionExpression": "attribute_not_exists(sk)",
            })
        except DynamoError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise

    def pending_alerts(self) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": "pk = :a",
                                  "FilterExpression": "#s <> :sent", "ExpressionAttributeNames": {"#s": "status"},
                                  "ExpressionAttributeValues": {":a": {"S": ALERT_PK}, ":sent": {"S": "sent"}},
                                  "ConsistentRead": True}
        return list(paginate(self._ddb.query, **kwargs))

    def claim_alert(self, sk: str, now: int, claim_s: int = 300) -> bool:
        """Only one sender (of any number running at once) wins an alert; a crashed claim expires."""
        try:
            self._ddb.update_item(
                TableName=self.table, Key={"pk": {"S": ALERT_PK}, "sk": {"S": sk}},
                UpdateExpression="SET #s = :claimed, claimed_until = :until",
                ConditionExpression="#s = :pending OR (#s = :claimed AND claimed_until < :now)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":claimed": {"S": "claimed"}, ":pending": {"S": "pending"},
                                           ":until": _n(now + claim_s), ":now": _n(now)})
            return True
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False

    def mark_alert_sent(self, sk: str, message_id: str) -> None:
        self._ddb.update_item(
            TableName=self.table, Key={"pk": {"S": ALERT_PK}, "sk": {"S": sk}},
            UpdateExpression="SET #s = :sent, message_id = :m", ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":sent": {"S": "sent"}, ":m": {"S": message_id}})

    def counters_with_leases(self) -> list[dict[str, Any]]:
        """Counter items holding leases (the scheduled sweeper; a scan of a small table)."""
        kwargs: dict[str, Any] = {"TableName": self.table, "FilterExpression": "reserved > :z OR tombstones > :z",
                                  "ExpressionAttributeValues": {":z": _n(0)}}
        return list(paginate(self._ddb.scan, **kwargs))
