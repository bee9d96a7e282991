"""Budgets table: definitions, atomic counters, rate windows, loop counters and alert markers.

Keys (see schema.BUDGETS):
    pk = <ws>                       sk = "budget#<scope>" | "limit#<subject>" | "policy"   definitions
    pk = <ws>#budget#<scope>        sk = "M#<yyyy-mm>"        spend counter for a budget and month:
        committed (= spent + reserved), reserved, spent, requests (micro-dollars / counts),
        dc_<yyyy-mm-dd> / ds_<yyyy-mm-dd>   the day's committed / spent (daily caps, same item; those of
                                            2-3 days before removed by each reservation or pool claim),
        l_<request id> = {w, exp, day}      one lease per in-flight reservation,
        l_<pool id> = {w, exp, day, n, t}   a process's reservation pool (budgets/pool.py); n = its
                                            settlement writes applied (each fenced by the last count),
                                            t = its claim's wall-clock ms (the ledger range it owes from),
        s_<hash of request id> = 1          a pooled request's cost added on its own, where neither its
                                            ledger record nor the count can fence it (its record's write
                                            failed; its pool failed or was swept; removed with the pool),
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
    pool claim             the reservation's UpdateItem for W = N x worst under the pool's lease, condition
                           W fits below every threshold (budgets/pool.py ceilings)
    pooled settle          UpdateItem SET l_<pool>.n = :after ADD actual (several settlements at once),
                           condition l_<pool>.n = :before (exactly once; one write on its way per item);
                           a zero-cost pooled request writes nothing; fallback: SET marker, condition
                           the marker is absent (and for a replay, the failed write's count unmoved)
    settle through ledger  none: the request's ledger record names its pool and cost (`defer`, `ledgered`)
    pool release           UpdateItem REMOVE pool lease (and fallback markers) ADD -W + what its requests owe
                           (their costs, to spent, committed and the day's), condition the lease exists
    pool fold (sweeper)    the same write for an expired pool, what it owes read from the ledger: Query
                           pk=<ws>#<day>, sk in the claim's range, filter the record names the pool
    sweep                  UpdateItem REMOVE expired leases ADD -amounts, condition they all still exist
    rate / loop windows    UpdateItem ADD n, condition n < limit (a rate window: ADD n :N, tk :T for a quota
                           block of N requests, condition n <= rpm - N, tk <= tpm - T: budgets/quota.py)
    throttle window        part of the reservation's UpdateItem (ADD tn, condition tm = minute; or SET
                           tm, tn = 1, condition tm < minute): no write of its own
    alerts                 UpdateItem create (condition: new) | Query pk="alert" | UpdateItem claim (condition)

Every hot-path operation is a single-item conditional write: DynamoDB serializes those per item
without the conflict errors that transactions on a hot item produce under heavy concurrency.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from meterline.budgets import pool as pools
from meterline.budgets import quota
from meterline.budgets.model import Budget, Enforcement, Policy, RateLimit
from meterline.budgets.policy import crossed_thresholds
from meterline.config import Settings
from meterline.store import aws
from meterline.store.codec import from_item, paginate, to_item
from meterline.store.ddb_http import DynamoError, DynamoHttp
from meterline.store.schema import BUDGETS

log = logging.getLogger("meterline.budgets")
LEASE_PREFIX = "l_"
MARKER_PREFIX = "s_"  # a pooled request's settlement marker
MAX_BATCH = 25  # pooled settlements of one counter item written together (the expression stays small)
_MARKED = "_marked"  # (in a settlement's returned state) it was fenced by its marker
# A cancelled reservation's tombstone (`x_<request id>` = expiry): a reserve that was sent, failed on
# the client's side and is applied late by the server finds it and refuses, so nothing stays held.
TOMBSTONE_PREFIX = "x_"
ALERT_PK = "alert"


def marker_of(request_id: str) -> str:
    """A pooled request's settlement marker (its key in its pool's in-flight carves, and on the item
    where a settlement falls back to it): 72 bits of its id's hash, short on the item."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=9).digest()
    return MARKER_PREFIX + base64.urlsafe_b64encode(digest).decode()


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
    pool: str = ""  # carved from this process's pool (its id), not reserved under the request's own lease


def _carved(pool: pools.Pool, budget: Budget, month: str, day: str, marker: str, worst: int,
            now: float) -> Reservation | None:
    """A request's reservation carved from `pool` (no write), or None when it has no room or time."""
    view = pool.carve(marker, worst, now)
    return Reservation(budget, worst, month, day, view, pool.expires, pool.id) if view is not None else None


@functools.lru_cache(maxsize=64)
def _stale_days(day: str) -> tuple[str, ...]:
    """The day figures a reservation on `day` removes from its month's counter: those of 2 and 3 days
    before (no lease lives that long, and only today's are read). Without it every day of traffic left
    ~40 bytes on the item, past 1 KB - two write units a write - by the month's second half."""
    d = date.fromisoformat(day)
    return tuple(f"{kind}_{(d - timedelta(days=k)).isoformat()}" for k in (2, 3) for kind in ("dc", "ds"))


def _pruning(request: dict[str, Any], day: str) -> dict[str, Any]:
    """`request` (a reservation or a pool claim) that also removes the counter's stale day figures."""
    stale = _stale_days(day)
    return {**request, "UpdateExpression": request["UpdateExpression"] + " REMOVE " + ", ".join(
                f"#o{i}" for i in range(len(stale))),
            "ExpressionAttributeNames": {**request["ExpressionAttributeNames"],
                                         **{f"#o{i}": attr for i, attr in enumerate(stale)}}}


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


def _with_minute(request: dict[str, Any], conditions: list[str], window: int, *, fresh: bool,
                 count: int = 1, pooled: bool = False) -> dict[str, Any]:
    """The reservation `request` that also counts `count` requests in minute `window`: ADD tn into
    the item's window when it is `window`, or (fresh) start it, when the item's window is older.
    (A pool claims its requests' places in the minute: count = N, and counts `requests` at settling.)"""
    adds = "committed :w, reserved :w, #dc :w" + ("" if pooled else ", requests :one")
    if fresh:
        update = f"SET #lease = :lease, tm = :min, tn = :cnt ADD {adds}"
        window_condition = "(attribute_not_exists(tm) OR tm < :min)"
    else:
        update = f"SET #lease = :lease ADD {adds}, tn :cnt"
        window_condition = "tm = :min"
    return {**request, "UpdateExpression": update,
            "ConditionExpression": " AND ".join([*conditions, window_condition]),
            "ExpressionAttributeValues": {**request["ExpressionAttributeValues"], ":min": _n(window),
                                          ":cnt": _n(count)}}


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
        # (workspace, scope, month, day) -> this process's reservation pools for it (budgets/pool.py),
        # and every pool not released yet, by id (a pooled request's settlement finds its pool).
        self._slots: dict[tuple[str, str, str, str], pools.Slot] = {}
        self._pools: dict[str, pools.Pool] = {}
        self._background: set[asyncio.Future[Any]] = set()
        # (workspace, scope, month) -> pooled settlements waiting for the item's write on its way.
        self._settling: dict[tuple[str, str, str], list[Any]] = {}
        self.pool_writes = 0  # pool claims and releases this process made (bench/overhead.py reports them)
        self.alone_writes = 0  # reservations this process made one request at a time (likewise)
        self.settle_writes = 0  # settlement writes (likewise; coalesced ones count once)
        self.ledger_settlements = 0  # settlements through the ledger record: no write of their own (likewise)

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
    def carve(self, workspace: str, budget: Budget, month: str, day: str, request_id: str, worst: int,
              now: float) -> Reservation | None:
        """`reserve` from memory: the reservation carved from this process's current pool for the
        budget (the request counted in the process's traffic for it), or None: then `reserve` it,
        `observed=True`. The enforcement stage asks this first, so a request whose reservations and
        rate windows all come from memory makes no task and no write."""
        slot = self._slot(workspace, budget, month, day, worst, now)
        if slot is None or slot.current is None or slot.current.budget != budget:
            return None
        return _carved(slot.current, budget, month, day, marker_of(request_id), worst, now)

    def _slot(self, workspace: str, budget: Budget, month: str, day: str, worst: int, now: float | None
              ) -> pools.Slot | None:
        """This process's pools for the budget and day (`now`: count the request in its traffic), or
        None where pools do not apply."""
        if worst <= 0 or _needs_whole_counter(budget, worst):
            return None
        key = (workspace, budget.scope, month, day)
        slot = self._slots.get(key)
        if slot is None:
            if len(self._slots) >= 4096:  # bounded: one entry per budget and day this process serves
                self._slots = {k: v for k, v in self._slots.items() if v.current is not None}
                if len(self._slots) >= 4096:
                    return None
            slot = self._slots[key] = pools.Slot()
        if now is not None:
            slot.traffic.observe(now)
        return slot

    async def reserve(self, client: DynamoHttp, workspace: str, budget: Budget, month: str, day: str,
                      request_id: str, worst: int, lease_s: int, now: float,
                      count_minute: bool = False, observed: bool = False) -> Reservation | Refused:
        """Reserve `worst` on the budget's month counter under the request's lease. `count_minute`
        (a budget with a throttle stage) also counts the request in the counter's minute window
        (`tm` = epoch minute, `tn` = requests reserved in it), in the same write: its ordinal in the
        minute is the reservation's state["tn"]. Every reserved request of such a budget is counted,
        whether or not the stage has begun: a minute that crosses the threshold already holds the
        requests that crossed it, so the stage admits at most `throttle_rpm` in that minute too
        (counting only once throttled let `throttle_rpm` more through on top).
        A process with steady traffic for the budget carves the reservation from its pool instead
        (budgets/pool.py): no write, when the pool has room. `observed`: `carve` was asked first (it
        counted the request in the process's traffic)."""
        slot = self._slot(workspace, budget, month, day, worst, None if observed else now)
        if slot is not None:
            pooled = await self._reserve_pooled(client, slot, workspace, budget, month, day, request_id, worst,
                                                lease_s, now, count_minute)
            if pooled is not None:
                return pooled
        return await self._reserve_alone(client, workspace, budget, month, day, request_id, worst, lease_s, now,
                                         count_minute)

    async def _reserve_alone(self, client: DynamoHttp, workspace: str, budget: Budget, month: str, day: str,
                             request_id: str, worst: int, lease_s: int, now: float,
                             count_minute: bool) -> Reservation | Refused:
        """One request's reservation under its own lease (`reserve`)."""
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
                self.alone_writes += 1
                result = await client.call("UpdateItem", _pruning(request, day))
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

    # -- reservation pools (budgets/pool.py) -------------------------------------------------------
    async def _reserve_pooled(self, client: DynamoHttp, slot: pools.Slot, workspace: str, budget: Budget,
                              month: str, day: str, request_id: str, worst: int, lease_s: int, now: float,
                              count_minute: bool) -> Reservation | None:
        """The reservation carved from this process's pool for the budget (claiming a new pool when
        the traffic is steady and the budget far from its thresholds), or None: reserve alone."""
        marker = marker_of(request_id)
        if slot.current is not None and slot.current.budget != budget:  # redefined: a new pool, new thresholds
            slot.current.closed = True
        for _ in range(3):
            carved = _carved(slot.current, budget, month, day, marker, worst, now) if slot.current else None
            if carved is not None:
                return carved
            if slot.claiming is None:
                break
            await asyncio.shield(slot.claiming)  # a pool for this budget is on its way: carve from it
        else:
            return None
        old = slot.current
        if old is not None:  # no room or no time left in it: a new pool takes over
            slot.current = None
            old.closed = True
        release = (asyncio.ensure_future(self._release_pool(client, old))
                   if old is not None and old.idle else None)
        try:
            limits = pools.ceilings(budget, day)
            size = slot.next_size(limits, worst)
            if size <= 1:
                return None
            waiters = slot.claiming = asyncio.get_running_loop().create_future()
            try:
                return await self._claim_pool(client, slot, workspace, budget, month, day, marker, worst, size,
                                              limits, lease_s, now, count_minute)
            finally:
                slot.claiming = None
                waiters.set_result(None)
        finally:
            if release is not None:
                # The old pool's release went out with the claim (one round trip); it has landed before
                # a request reserves alone, so that request is never refused for this process's own pool.
                await release

    async def _claim_pool(self, client: DynamoHttp, slot: pools.Slot, workspace: str, budget: Budget, month: str,
                          day: str, marker: str, worst: int, size: int, limits: dict[str, int], lease_s: int,
                          now: float, count_minute: bool) -> Reservation | None:
        pool_id = "p" + uuid.uuid4().hex
        claimed_ms = int(time.time() * 1000)  # wall clock, as the ledger records' times (not `now`)
        amount = size * worst
        expires = int(now) + lease_s + math.ceil(pools.WINDOW_S) + 1  # past every carve's own lease_s
        names = {"#lease": LEASE_PREFIX + pool_id, "#dc": f"dc_{day}", "#tomb": TOMBSTONE_PREFIX + pool_id}
        values: dict[str, Any] = {
            ":w": _n(amount),
            # n: the pool's settlement writes applied (the fence of the next one; `_add_together`).
            # t: the claim's wall-clock ms, the ledger range the sweeper folds a crashed pool from.
            ":lease": {"M": {"w": _n(amount), "exp": _n(expires), "day": {"S": day}, "n": _n(0),
                             "t": _n(claimed_ms)}}}
        # Like a reservation's: a claim this process cancelled (sent, unanswered) is refused if it lands late.
        conditions = ["attribute_not_exists(#lease)", "attribute_not_exists(#tomb)"]
        for i, (attr, limit) in enumerate(limits.items()):
            names[f"#c{i}"] = attr
            values[f":c{i}"] = _n(limit - amount)
            conditions.append(f"(attribute_not_exists(#c{i}) OR #c{i} <= :c{i})")
        request: dict[str, Any] = {
            "TableName": self.table, "Key": counter_key(workspace, budget.scope, month),
            "UpdateExpression": "SET #lease = :lease ADD committed :w, reserved :w, #dc :w",
            "ConditionExpression": " AND ".join(conditions), "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values, "ReturnValues": "UPDATED_NEW",
        }
        minute = int(now // 60)
        memo = (workspace, budget.scope, month)
        window = minute if self._minutes.get(memo) == minute else None
        for _ in range(3):
            if count_minute:  # the pool's requests take their places in the minute's count now
                request = _with_minute(request, conditions, window if window is not None else minute,
                                       fresh=window is None, count=size, pooled=True)
            try:
                self.pool_writes += 1
                result = await client.call("UpdateItem", _pruning(request, day))
            except DynamoError as exc:
                if exc.code != "ConditionalCheckFailedException":
                    if exc.maybe_applied:  # it may land: undo it by its lease (a tombstone if it has not)
                        await self._cancel_quietly(client, workspace, budget, month, day, pool_id, amount,
                                                   lease_s, now)
                    # Raised as not applied: the request's own reservation was never sent (the pool's is undone).
                    raise DynamoError(exc.code, "a budget pool could not be claimed", exc.status) from exc
                old = from_item(exc.body.get("Item", {}))
                slot.see(old)
                stored = old.get("tm")
                if count_minute and all(int(old.get(a, 0)) <= lim - amount for a, lim in limits.items()):
                    # The thresholds held, so the minute window refused: use the item's minute, or start ours.
                    window = int(stored) if stored is not None and int(stored) >= minute else None
                    continue
                return None  # near a threshold (or another process's pools): this request reserves alone
            state = _reserved_state(result.get("Attributes", {}))
            slot.see(state)
            ordinal = None
            if count_minute:
                self._remember_minute(memo, int(state.get("tm", window if window is not None else minute)))
                ordinal = int(state["tn"]) - size + 1
            window_end = now + pools.WINDOW_S
            if count_minute:  # its places in the count are this minute's
                window_end = min(window_end, (int(state.get("tm", minute)) + 1) * 60)
            pool = pools.Pool(pool_id, workspace, budget, month, day, amount, window_end, expires, state, size,
                              ordinal, free=amount, claimed_ms=claimed_ms)
            self._pools[pool_id] = pool
            slot.current = pool
            asyncio.get_running_loop().call_later(max(window_end - now, 0) + 0.05, self._window_over, client, slot,
                                                  pool)
            carved = _carved(pool, budget, month, day, marker, worst, now)
            assert carved is not None
            return carved
        return None

    def _window_over(self, client: DynamoHttp, slot: pools.Slot, pool: pools.Pool) -> None:
        """The pool's window is over (a timer): release it if its requests have all settled (if not,
        the last one's settlement does)."""
        if slot.current is pool:
            slot.current = None
        pool.closed = True
        if pool.idle and pool.id in self._pools:
            self._spawn(self._release_pool(client, pool))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release_pool(self, client: DynamoHttp, pool: pools.Pool) -> None:
        """Release what the pool still holds (all of W), add the costs of its requests that settled
        through the ledger (`owed`) and remove any fallback markers, in one write conditional on the
        lease (so exactly once, by this process or else by the sweeper from the ledger); record the
        alert thresholds that adding crossed. Never raises (the sweeper folds a pool whose release
        failed)."""
        if self._pools.pop(pool.id, None) is None:
            return  # released already
        names = {"#lease": LEASE_PREFIX + pool.id}
        for i, marker in enumerate(pool.settled):
            names[f"#m{i}"] = marker
        removes = ", ".join(names)
        try:
            self.pool_writes += 1
            state = await self._fold(client, pool.workspace, pool.budget.scope, pool.month, pool.day, names, removes,
                                     pool.size, pool.owed, pool.owed_requests)
        except DynamoError as exc:
            if exc.code != "ConditionalCheckFailedException":  # already swept (and folded): nothing held
                log.warning("budget_pool_release_failed", extra={"scope": pool.budget.scope, "pool": pool.id,
                                                                 "error": exc.code})
            return
        except Exception as exc:  # the client closed under a timer's release: the sweeper has it
            log.warning("budget_pool_release_failed", extra={"scope": pool.budget.scope, "pool": pool.id,
                                                             "error": type(exc).__name__})
            return
        await self.record_crossings(client, pool.workspace, pool.budget, pool.month, pool.day, pool.owed, state)

    async def _fold(self, client: DynamoHttp, workspace: str, scope: str, month: str, day: str,
                    names: dict[str, str], removes: str, held: int, owed: int, requests: int) -> dict[str, Any]:
        """REMOVE `removes` (the pool's lease first, `names`), give back `held` and add `owed` spend
        of `requests` requests on `day`, condition the lease exists: a pool's release or fold."""
        names = {**names, "#dc": f"dc_{day}"}
        values = {":c": _n(owed - held), ":neg": _n(-held)}
        adds = ["committed :c", "reserved :neg", "#dc :c"]
        if owed or requests:
            names["#ds"] = f"ds_{day}"
            values[":o"], values[":k"] = _n(owed), _n(requests)
            adds += ["spent :o", "#ds :o", "requests :k"]
        result = await client.call("UpdateItem", {
            "TableName": self.table, "Key": counter_key(workspace, scope, month),
            "UpdateExpression": f"REMOVE {removes} ADD {', '.join(adds)}",
            "ConditionExpression": "attribute_exists(#lease)",
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
            "ReturnValues": "UPDATED_NEW" if owed else "NONE",
        })
        return from_item(result.get("Attributes", {}))

    async def record_crossings(self, client: DynamoHttp, workspace: str, budget: Budget, month: str, day: str,
                               added: int, state: dict[str, Any]) -> None:
        """Record the alert thresholds that adding `added` crossed, the counter now at `state`."""
        if added <= 0:
            return
        follow_ups = []
        for period, cap, spent in (("M#" + month, budget.monthly_micros, int(state.get("spent", 0))),
                                   ("D#" + day, budget.daily_micros, int(state.get(f"ds_{day}", 0)))):
            if cap is None:
                continue
            for threshold in crossed_thresholds(spent - added, spent, cap, budget.alerts):
                follow_ups.append(self.record_alert(client, workspace, budget, period, threshold, spent, cap))
        for outcome in await asyncio.gather(*follow_ups, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.error("budget_follow_up_failed", extra={"scope": budget.scope, "error": type(outcome).__name__})

    # -- settlements through the ledger (a pooled request's cost, added by its pool's release) ---------
    def defer(self, reservation: Reservation, request_id: str, actual: int, ts_ms: int, now: float) -> bool:
        """Settle a pooled request through its ledger record instead of a write of its own: True when
        its pool takes it (then its ledger record names the pool and the cost, and `ledgered` is
        called once the record's write is done). A zero cost writes nothing either way. False: it
        settles with `settle` (no pool here, a pool left to expire, or a record outside the range
        the sweeper would read)."""
        pool = self._pools.get(reservation.pool) if reservation.pool else None
        if pool is None or not pool.covers(ts_ms, now):
            return False
        marker = marker_of(request_id)
        self.ledger_settlements += 1
        if actual <= 0:
            if pool.settle(marker):
                pool.returned(marker, False)
            return True
        pool.defer(marker, actual)
        return True

    async def ledgered(self, client: DynamoHttp, workspace: str, reservation: Reservation, request_id: str,
                       written: bool) -> None:
        """The deferred request's ledger record was written (its cost is the pool's to add), or not
        (the record goes to the replay without naming the pool, and the cost is added now, under the
        request's marker: the sweeper skips a record whose marker is on the counter, in case the
        failed write did land). Releases the pool when it was its last request."""
        pool = self._pools.get(reservation.pool)
        if pool is None:
            return
        marker = marker_of(request_id)
        cost = pool.ledgered(marker, written)
        if cost is not None:
            try:
                await self._add_marked(client, workspace, reservation, marker, cost, None)
                pool.returned(marker, True)
            except Exception as exc:
                pool.returned(marker, False)  # a marker that did land stays (a replay then adds nothing)
                log.error("budget_settle_failed", extra={
                    "request_id": request_id, "scope": reservation.budget.scope, "error": str(exc)[:300],
                    "settlement": {"workspace": workspace, "scope": reservation.budget.scope,
                                   "month": reservation.month, "day": reservation.day, "request_id": request_id,
                                   "worst": reservation.worst, "actual": cost,
                                   "lease_expires": reservation.lease_expires, "pool": reservation.pool}})
        if pool.idle and pool.id in self._pools:
            await self._release_pool(client, pool)

    async def fold_pool(self, client: DynamoHttp, ledger: Any, workspace: str, scope: str, month: str,
                        attr: str, lease: dict[str, Any], item: dict[str, Any],
                        budget: Budget | None) -> int:
        """The sweeper's release of an expired pool: add the costs its requests' ledger records name
        (read from the range its claim time bounds; a record whose request's marker is on the counter
        was added on its own), and give back W, in one write conditional on the lease (exactly once,
        against a release by its process). Returns the cost added."""
        owed = requests = 0
        pool_id = attr[len(LEASE_PREFIX):]
        if "t" in lease:
            claimed = int(lease["t"])
            for request_id, cost in ledger.pool_costs(workspace, pool_id, claimed - pools.LEDGER_BEFORE_MS,
                                                      claimed + pools.LEDGER_AFTER_MS):
                if marker_of(request_id) not in item:
                    owed += cost
                    requests += 1
        day = str(lease["day"])
        try:
            state = await self._fold(client, workspace, scope, month, day, {"#lease": attr}, "#lease",
                                     int(lease["w"]), owed, requests)
        except DynamoError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
            return 0  # released by its process in between
        if budget is not None:
            await self.record_crossings(client, workspace, budget, month, day, owed, state)
        return owed

    async def release_pools(self, client: DynamoHttp) -> None:
        """Close every pool and release those whose requests have all settled (shutdown; tests)."""
        for slot in self._slots.values():
            if slot.current is not None:
                slot.current.closed = True
                slot.current = None
        await asyncio.gather(*(self._release_pool(client, p) for p in list(self._pools.values()) if p.idle))
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _cancel_quietly(self, client: DynamoHttp, workspace: str, budget: Budget, month: str, day: str,
                              lease_id: str, worst: int, lease_s: int, now: float) -> None:
        try:
            await self.cancel(client, workspace, budget, month, day, lease_id, worst, lease_s, now)
        except Exception as exc:  # the lease (if it ever lands) expires and the sweeper releases it
            log.error("budget_cancel_failed", extra={"request_id": lease_id, "scope": budget.scope,
                                                     "error": type(exc).__name__})

    async def _settle_pooled(self, client: DynamoHttp, workspace: str, reservation: Reservation, request_id: str,
                             actual: int, pool_seq: int | None = None) -> dict[str, Any]:
        """Add a pooled request's actual cost exactly once and give its carve back to the pool;
        release the pool when it was the last one. The write is fenced by the pool's settlement
        count (`n` in its lease: one write on its way per counter item, each conditional on the
        count it last left), so it leaves nothing on the item; a settlement whose pool this process
        no longer holds, or whose pool's count is unknown (a failed write), is fenced by a marker
        instead. `pool_seq`: the count a failed write was conditional on (a replay: applied only if
        that write was not)."""
        pool = self._pools.get(reservation.pool)
        marker = marker_of(request_id)
        if pool is not None and not pool.settle(marker):
            return {}  # settled already, or being settled (a repeated call): its cost is added once
        state: dict[str, Any] = {}
        wrote_marker = False
        try:
            if actual > 0:
                if pool is None or pool.tainted:
                    wrote_marker = True
                    state = await self._add_marked(client, workspace, reservation, marker, actual, pool_seq)
                else:
                    state = await self._add_coalesced(client, workspace, reservation, marker, actual)
        except BaseException:
            if pool is not None:  # unknown outcome: the pool stays held until it expires (the replay's)
                pool.tainted = pool.closed = True
                pool.returned(marker, wrote_marker)
            raise
        if pool is not None:
            pool.returned(marker, wrote_marker or bool(state.pop(_MARKED, False)))
            if pool.idle:
                await self._release_pool(client, pool)
        return state

    async def _add_coalesced(self, client: DynamoHttp, workspace: str, reservation: Reservation, marker: str,
                             actual: int) -> dict[str, Any]:
        """`_add_together` for one settlement, coalesced per counter item: while a write of the item is
        on its way, the next settlements queue and go out together when it returns (concurrent requests
        of one budget: one write for many; a lone request: its own write at once). One write on its way
        per item is also what lets each be fenced by its pool's count."""
        key = (workspace, reservation.budget.scope, reservation.month)
        queue = self._settling.get(key)
        if queue is not None:
            waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            queue.append((reservation, marker, actual, waiter))
            return await asyncio.shield(waiter)  # resolved by the write that carries it
        self._settling[key] = []  # this write is the item's write on its way
        try:
            return (await self._add_together(client, workspace, [(reservation, marker, actual, None)]))[0]
        finally:
            self._next_batch(client, workspace, key)

    def _next_batch(self, client: DynamoHttp, workspace: str, key: tuple[str, str, str]) -> None:
        queue = self._settling.pop(key, None)
        if queue:
            self._settling[key] = queue[MAX_BATCH:]  # this batch is the item's write on its way now
            self._spawn(self._add_batch(client, workspace, key, queue[:MAX_BATCH]))

    async def _add_batch(self, client: DynamoHttp, workspace: str, key: tuple[str, str, str],
                         batch: list[tuple[Reservation, str, int, asyncio.Future[dict[str, Any]]]]) -> None:
        try:
            states = await self._add_together(client, workspace, batch)
            for (*_, waiter), state in zip(batch, states, strict=True):
                if not waiter.done():
                    waiter.set_result(state)
        except BaseException as exc:
            for *_, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._next_batch(client, workspace, key)

    async def _add_together(self, client: DynamoHttp, workspace: str,
                            batch: list[tuple[Reservation, str, int, asyncio.Future[dict[str, Any]] | None]]
                            ) -> list[dict[str, Any]]:
        """One write for the pooled settlements of one counter item, fenced by each pool's count:
        `SET l_<pool>.n = :after` if `l_<pool>.n = :before` (applied once under the client's retries;
        a late copy of an applied write finds the count moved on). Each settlement gets the counter as
        its own left it (spent and the day's spent less what the later ones in the batch added), so an
        alert threshold crossed inside a batch is found once, by the request that crossed it."""
        counted = [e for e in batch if (p := self._pools.get(e[0].pool)) is not None and not p.tainted]
        if len(counted) < len(batch):  # a pool whose count is unknown now (a failed write): those marked
            if not counted:
                marked = await asyncio.gather(*(self._add_marked(client, workspace, r, m, a, None)
                                                for r, m, a, _ in batch))
                return [{**s, _MARKED: True} for s in marked]
            states = dict(zip((id(e) for e in counted), await self._add_together(client, workspace, counted),
                              strict=True))
            rest = [e for e in batch if id(e) not in states]
            for e, s in zip(rest, await self._add_together(client, workspace, rest), strict=True):
                states[id(e)] = s
            return [states[id(e)] for e in batch]
        first = batch[0][0]
        held = {r.pool: self._pools[r.pool] for r, *_ in batch}
        names: dict[str, str] = {}
        values: dict[str, Any] = {":a": _n(sum(a for _, _, a, _ in batch)), ":k": _n(len(batch))}
        sets, conditions, days, after = [], [], {}, {}
        for j, (pool_id, pool) in enumerate(held.items()):
            after[pool_id] = pool.seq + sum(1 for r, *_ in batch if r.pool == pool_id)
            names[f"#p{j}"] = LEASE_PREFIX + pool_id
            values[f":q{j}"], values[f":r{j}"] = _n(pool.seq), _n(after[pool_id])
            sets.append(f"#p{j}.n = :r{j}")
            conditions.append(f"#p{j}.n = :q{j}")
        for reservation, _, actual, _ in batch:
            days[reservation.day] = days.get(reservation.day, 0) + actual
        adds = ["committed :a", "spent :a", "requests :k"]
        for d, (day, amount) in enumerate(days.items()):
            names[f"#dc{d}"], names[f"#ds{d}"] = f"dc_{day}", f"ds_{day}"
            values[f":d{d}"] = _n(amount)
            adds += [f"#dc{d} :d{d}", f"#ds{d} :d{d}"]
        try:
            self.settle_writes += 1
            result = await client.call("UpdateItem", {
                "TableName": self.table, "Key": counter_key(workspace, first.budget.scope, first.month),
                "UpdateExpression": f"SET {', '.join(sets)} ADD {', '.join(adds)}",
                "ConditionExpression": " AND ".join(conditions), "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                "ExpressionAttributeNames": names, "ExpressionAttributeValues": values, "ReturnValues": "UPDATED_NEW",
            })
            state = from_item(result.get("Attributes", {}))
        except DynamoError as exc:
            if exc.code != "ConditionalCheckFailedException":
                for pool in held.values():
                    exc.pool_seqs = {**getattr(exc, "pool_seqs", {}), pool.id: pool.seq}  # for the replay
                raise
            state = from_item(exc.body.get("Item", {}))
            counts = {p: state.get(LEASE_PREFIX + p, {}).get("n") for p in held}
            if any(n is None or int(n) != after[p] for p, n in counts.items()):
                # Not applied (a pool's lease was swept: its request outlived it): each on its own, marked.
                states = await asyncio.gather(*(self._add_marked(client, workspace, r, m, a, None)
                                                for r, m, a, _ in batch))
                return [{**s, _MARKED: True} for s in states]
            # Our own write, retried by the client after its first answer was lost: applied once.
        for pool_id, pool in held.items():
            pool.seq = after[pool_id]
        spent = {"spent": int(state.get("spent", 0)), **{f"ds_{day}": int(state.get(f"ds_{day}", 0)) for day in days}}
        states = []
        for reservation, _, actual, _ in reversed(batch):  # each sees the counter as its own settlement left it
            states.append({**state, **spent})
            spent["spent"] -= actual
            spent[f"ds_{reservation.day}"] -= actual
        return states[::-1]

    async def _add_marked(self, client: DynamoHttp, workspace: str, reservation: Reservation, marker: str,
                          actual: int, pool_seq: int | None) -> dict[str, Any]:
        """A pooled settlement fenced by its own marker (`s_<hash>`, left on the item until its pool
        is released or the month ends): applied unless the marker is there, and, for the replay of a
        failed counted write (`pool_seq`), unless that write did land (the pool's count moved on)."""
        names = {"#m": marker, "#dc": f"dc_{reservation.day}", "#ds": f"ds_{reservation.day}"}
        values = {":a": _n(actual), ":one": _n(1)}
        condition = "attribute_not_exists(#m)"
        if pool_seq is not None:
            names["#p"] = LEASE_PREFIX + reservation.pool
            values[":q"] = _n(pool_seq)
            condition += " AND (attribute_not_exists(#p) OR #p.n = :q)"
        try:
            self.settle_writes += 1
            result = await client.call("UpdateItem", {
                "TableName": self.table, "Key": counter_key(workspace, reservation.budget.scope, reservation.month),
                "UpdateExpression": "SET #m = :one ADD committed :a, spent :a, #dc :a, #ds :a, requests :one",
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
                "ReturnValues": "UPDATED_NEW", "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            })
        except DynamoError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
            return from_item(exc.body.get("Item", {}))  # applied before (or its counted write was): nothing added
        return from_item(result.get("Attributes", {}))

    async def settle(self, client: DynamoHttp, workspace: str, reservation: Reservation, request_id: str,
                     actual: int, now: float | None = None, pool_seq: int | None = None) -> dict[str, Any]:
        """Replace a reservation by the actual cost (0 = release), exactly once per lease. A missing
        lease means either our own retried settle already applied (while the lease is still valid)
        or the sweeper released it after it expired (the call outlived its lease): only then is the
        actual spend added on its own. A pooled request's cost is added under its pool's count instead."""
        if reservation.pool:
            return await self._settle_pooled(client, workspace, reservation, request_id, actual, pool_seq)
        delta = actual - reservation.worst
        names = {"#lease": LEASE_PREFIX + request_id, "#dc": f"dc_{reservation.day}", "#ds": f"ds_{reservation.day}"}
        key = counter_key(workspace, reservation.budget.scope, reservation.month)
        try:
            self.settle_writes += 1
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
            self.settle_writes += 1
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
    def admit(self, workspace: str, limit: RateLimit, tokens: int, now: float) -> tuple[bool, dict[str, Any]] | None:
        """`rate_window` from memory: admitted from this process's quota block for the subject (the
        request counted in the process's traffic), or None: then `rate_window`, `observed=True`."""
        if not quota.eligible(limit) or (limit.tpm is not None and tokens > limit.tpm):
            return None
        taken = self._quota(workspace, limit, now).take(tokens)
        return (True, taken) if taken is not None else None

    async def rate_window(self, client: DynamoHttp, workspace: str, limit: RateLimit, tokens: int,
                          now: float, observed: bool = False) -> tuple[bool, dict[str, Any]]:
        """Count one request (and its tokens) in the subject's minute window; (allowed, window state).
        A process with steady traffic for the subject claims blocks of requests ahead and admits from
        them without a write (budgets/quota.py: never more than the limit, a refusal is exact).
        `observed`: `admit` was asked first (it counted the request in the process's traffic)."""
        if limit.tpm is not None and tokens > limit.tpm:
            return False, {"n": 0, "tk": 0}
        block = self._quota(workspace, limit, now, observe=not observed) if quota.eligible(limit) else None
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

    def _quota(self, workspace: str, limit: RateLimit, now: float, observe: bool = True) -> quota.Quota:
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
        if observe:
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
        """Durably note a threshold crossing, once per budget, period and threshold. An UpdateItem
        that creates the outbox item (condition: new), so the sweeper's role, which folds pools and
        may find a crossing, needs no PutItem on the table."""
        now = int(time.time())
        fields = {"workspace": {"S": workspace}, "scope": {"S": budget.scope}, "period": {"S": period},
                  "threshold": _n(threshold), "spent": _n(spent), "cap": _n(cap), "status": {"S": "pending"},
                  "created_at": _n(now), "expires_at": _n(now + 120 * 86400)}
        try:
            await client.call("UpdateItem", {
                "TableName": self.table,
                "Key": {"pk": {"S": ALERT_PK}, "sk": {"S": f"{workspace}#{budget.scope}#{period}#{threshold}"}},
                "UpdateExpression": "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields))),
                "ConditionExpression": "attribute_not_exists(sk)",
                "ExpressionAttributeNames": {f"#f{i}": name for i, name in enumerate(fields)},
                "ExpressionAttributeValues": {f":f{i}": value for i, value in enumerate(fields.values())},
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
