"""The streaming scorer: one pass over one workspace-day of ledger records, in time order.

Records arrive as `Query pk=<workspace>#<day>` returns them (sort key = epoch ms), so every signal
is computed in a single pass with state bounded by its time window (entries older than the window
are pruned as the day advances), never by the day's volume. Per-scope totals are bounded too: at
most MAX_SCOPE_VALUES values per dimension, the rest count as "(other)".

Rules (all $ in integer micro-dollars; token prices from the workspace's catalog at the record's day):

W1 duplicate calls    an `ok` request (not a cache hit) whose fingerprint (req_fp) was answered
                      (`ok` or `cache_hit`) within DUPLICATE_WINDOW_S before, or that semantic
                      dedup's detect mode noted as a near-duplicate (`semantic_duplicate_of`): $ = its cost.
W2 model overkill     an `ok` request with no tools, prompt ≤ SIMPLE_MAX_INPUT and output ≤
                      SIMPLE_MAX_OUTPUT tokens, on a model that has a cheaper counterpart (DOWNSHIFT):
                      $ = its cost - the same usage priced on the counterpart (if positive).
W3 agent thrashing    within a session, the 3rd and later occurrence of the same loop fingerprint
                      or of the same error code with gaps ≤ THRASH_WINDOW_S, and every request the
                      loop breaker stopped: $ = its cost. Any W3 caps the scope's grade at D.
W4 low utilisation    an `ok` request with max_tokens ≥ 1000 using under 10 % of it: $ = the unused
                      output tokens at the output price (capacity held, not billed: not graded).
W5 off-hours bursts   a UTC hour outside business hours (workspace time zone, Mon-Fri 09-18) with
                      more than BURST_FACTOR x max(norm, BURST_FLOOR) requests, norm = the median
                      request count of the day's off-hours hours: $ = cost x (n - norm) // n,
                      per scope with the scope's own cost and count in that hour.
W6 cache misses       a request whose stable prefix (≥ the model's minimum cacheable tokens) was
                      sent within CACHE_TTL_S before, with no cache read: $ = prefix tokens x
                      (input - cache-read price); and a cache write not read within its TTL (5 m
                      or 1 h; still unread at the end of the day counts): $ = tokens x (write - input price).
W7 oversized prompts  tokens removable by compacting pretty-printed JSON and repeated blocks, plus
                      prompt tokens above the route's p95 of the previous day: $ = those tokens at
                      the input price.
W8 wasteful retries   a request identical to one that failed with a non-retryable status (400, 401,
                      403, 404, 413, 422) within DUPLICATE_WINDOW_S before: $ = its cost; and paid
                      tokens of failed or cut attempts (failed-over attempts, client disconnects,
                      upstream breaks and timeouts): $ = their cost.
V1 V2 V3              the ledger's savings: cache (exact, semantic, prompt caching, templates),
                      routing, compression: $ = saved micro-dollars.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from meterline.money import round_scaled
from meterline.pricing.cache_rules import min_cacheable
from meterline.pricing.catalog import Catalog, PriceGap, Rates
from meterline.waste import DIMENSIONS
from meterline.waste.grades import ScopeReport

DUPLICATE_WINDOW_S = 600
SIMPLE_MAX_INPUT = 1_000
SIMPLE_MAX_OUTPUT = 300
THRASH_WINDOW_S = 900
THRASH_MIN = 3
LOW_UTIL_MIN_MAX_TOKENS = 1_000
LOW_UTIL_PCT = 10
BUSINESS_HOURS = (9, 18)  # local [start, end)
BUSINESS_DAYS = (0, 1, 2, 3, 4)  # Monday..Friday
BURST_FACTOR = 3
BURST_FLOOR = 10
CACHE_TTL_S = 300
CACHE_TTL_1H_S = 3600
NON_RETRYABLE = frozenset({400, 401, 403, 404, 413, 422})
CUT_OUTCOMES = frozenset({"client_disconnect", "upstream_break", "upstream_timeout"})
LOOP_STOPS = frozenset({"agent_loop_detected", "agent_loop_throttled"})
MAX_SCOPE_VALUES = 5_000
PRUNE_EVERY = 5_000
# Flagship -> the cheaper model a simple request could have used (same provider catalog).
DOWNSHIFT = {
    "openai/gpt-5": "openai/gpt-5-mini", "openai/gpt-5.1": "openai/gpt-5-mini",
    "openai/gpt-5.4": "openai/gpt-5-mini", "openai/gpt-5.5": "openai/gpt-5-mini",
    "openai/gpt-4.1": "openai/gpt-4.1-mini", "openai/gpt-4o": "openai/gpt-4o-mini", "openai/o3": "openai/o4-mini",
    "anthropic/claude-opus-4-1": "anthropic/claude-haiku-4-5",
    "anthropic/claude-opus-4-5": "anthropic/claude-haiku-4-5",
    "anthropic/claude-opus-4-6": "anthropic/claude-haiku-4-5",
    "anthropic/claude-opus-4-7": "anthropic/claude-haiku-4-5",
    "anthropic/claude-sonnet-4": "anthropic/claude-haiku-4-5",
    "anthropic/claude-sonnet-4-5": "anthropic/claude-haiku-4-5",
    "anthropic/claude-sonnet-4-6": "anthropic/claude-haiku-4-5",
    "gemini/gemini-2.5-pro": "gemini/gemini-2.5-flash", "gemini/gemini-3-pro-preview": "gemini/gemini-2.5-flash",
    "gemini/gemini-3.1-pro-preview": "gemini/gemini-2.5-flash",
    "bedrock/amazon.nova-pro-v1:0": "bedrock/amazon.nova-lite-v1:0",
}
CACHE_LEVERS = ("exact_cache", "semantic_cache", "prompt_cache", "template")
TOKEN_FIELDS = ("input_uncached", "cache_read", "cache_write_5m", "cache_write_1h", "output")


def percentile_95(counts: Counter[int]) -> int:
    """Nearest-rank p95 of a multiset given as value -> count."""
    total = sum(counts.values())
    rank = math.ceil(total * 95 / 100)
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    return 0


class Pricer:
    """Token prices per (catalog model, day), from the workspace's catalog (overrides applied)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._cache: dict[tuple[str, str], Any] = {}

    def point(self, model: str, day: str) -> Any:
        key = (model, day)
        if key not in self._cache:
            pricing = self.catalog.resolve(model) or self.catalog.find_by_name(model.rsplit("/", 1)[-1])
            self._cache[key] = pricing.at(date.fromisoformat(day)) if pricing else None
        return self._cache[key]

    def rates(self, model: str, day: str, prompt_tokens: int, service_tier: str | None) -> Rates | None:
        point = self.point(model, day)
        if point is None:
            return None
        try:
            return point.rates_for(prompt_tokens, service_tier)
        except PriceGap:  # a tier the catalog has no price for: the standard rates (estimates only)
            return point.rates_for(prompt_tokens, None)

    def resolved(self, model: str) -> str | None:
        pricing = self.catalog.resolve(model) or self.catalog.find_by_name(model.rsplit("/", 1)[-1])
        return pricing.model_id if pricing else None


def prompt_total(r: dict[str, Any]) -> int:
    return sum(int(r.get(f, 0)) for f in ("input_uncached", "cache_read", "cache_write_5m", "cache_write_1h"))


def cost_at(r: dict[str, Any], rates: Rates) -> int:
    return round_scaled(sum(int(r.get(f, 0)) * getattr(rates, "input" if f == "input_uncached" else f)
                            for f in TOKEN_FIELDS))


@dataclass
class _Pending:
    expires: float
    micros: int
    scopes: tuple[tuple[str, str], ...]
    request_id: str


@dataclass
class Scorer:
    """Feed `add(record)` in time order, then `finish()`. One workspace-day (UTC ledger partition)."""

    day: str  # the UTC day of the ledger partition, yyyy-mm-dd
    pricer: Pricer
    timezone: str = "UTC"
    baseline_p95: dict[str, int] = field(default_factory=dict)  # route -> prompt tokens (previous day)
    total: ScopeReport = field(default_factory=ScopeReport)
    scopes: dict[tuple[str, str], ScopeReport] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._answered: dict[str, float] = {}  # req_fp -> last ts (s) of an ok / cache_hit answer
        self._failed: dict[str, float] = {}  # req_fp -> last ts of a non-retryable failure
        self._loops: dict[tuple[str, str], tuple[float, int]] = {}  # (session, fp) -> (last ts, run length)
        self._prefixes: dict[tuple[str, str], float] = {}  # (model, prefix_fp) -> last ts
        self._writes: dict[tuple[str, str], list[_Pending]] = {}  # unread cache writes
        self._hours_n = [0] * 24
        self._hours_cost = [0] * 24
        self._hour_scopes: list[dict[tuple[str, str], list[int]]] = [{} for _ in range(24)]
        self._hour_examples: list[list[str]] = [[] for _ in range(24)]
        self._p95: dict[str, Counter[int]] = {}
        self._values: dict[str, set[str]] = {d: set() for d in DIMENSIONS}
        self._seen = 0
        self._now = 0.0
        tz = ZoneInfo(self.timezone)
        start = datetime.fromisoformat(self.day).replace(tzinfo=UTC)
        self._off_hours = []
        for hour in range(24):
            local = datetime.fromtimestamp(start.timestamp() + hour * 3600, tz=UTC).astimezone(tz)
            business = local.weekday() in BUSINESS_DAYS and BUSINESS_HOURS[0] <= local.hour < BUSINESS_HOURS[1]
            self._off_hours.append(not business)

    # -- bookkeeping ----------------------------------------------------------------------------
    def _scopes_of(self, r: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        out = []
        for dim in DIMENSIONS:
            value = str(r.get(dim) or "-")
            values = self._values[dim]
            if value not in values:
                if len(values) >= MAX_SCOPE_VALUES:
                    value = "(other)"
                else:
                    values.add(value)
            out.append((dim, value))
        return tuple(out)

    def _scope(self, key: tuple[str, str]) -> ScopeReport:
        found = self.scopes.get(key)
        if found is None:
            found = self.scopes[key] = ScopeReport()
        return found

    def _emit(self, code: str, micros: int, scopes: Iterable[tuple[str, str]], request_id: str | None,
              count: int = 1) -> None:
        self.total.signal(code).add(micros, count, request_id)
        for key in scopes:
            self._scope(key).signal(code).add(micros, count, request_id)

    def _prune(self) -> None:
        now = self._now
        self._answered = {k: t for k, t in self._answered.items() if now - t <= DUPLICATE_WINDOW_S}
        self._failed = {k: t for k, t in self._failed.items() if now - t <= DUPLICATE_WINDOW_S}
        self._loops = {k: v for k, v in self._loops.items() if now - v[0] <= THRASH_WINDOW_S}
        self._prefixes = {k: t for k, t in self._prefixes.items() if now - t <= CACHE_TTL_S}
        for key in list(self._writes):
            keep = []
            for pending in self._writes[key]:
                if pending.expires < now:
                    self._emit("W6", pending.micros, pending.scopes, pending.request_id)
                else:
                    keep.append(pending)
            if keep:
                self._writes[key] = keep
            else:
                del self._writes[key]

    # -- one record -----------------------------------------------------------------------------
    def add(self, r: dict[str, Any]) -> None:
        ts = int(r["ts"]) / 1000
        self._now = ts
        self._seen += 1
        if self._seen % PRUNE_EVERY == 0:
            self._prune()
        rid = str(r.get("request_id", ""))
        cost = int(r.get("cost_micros", 0))
        outcome = r.get("outcome", "ok")
        status = int(r.get("status", 200) or 200)
        scopes = self._scopes_of(r)
        self.total.spend_micros += cost
        self.total.requests += 1
        for key in scopes:
            scope = self._scope(key)
            scope.spend_micros += cost
            scope.requests += 1

        model = str(r.get("priced_as") or r.get("model") or "")
        prompt = prompt_total(r)
        rates = self.pricer.rates(model, self.day, prompt, r.get("service_tier")) if model else None
        fp = r.get("req_fp")

        # W8 (a) retry after a non-retryable failure; W1 duplicate of an answered request.
        retry = False
        if fp:
            failed_at = self._failed.get(fp)
            answered_at = self._answered.get(fp)
            if failed_at is not None and ts - failed_at <= DUPLICATE_WINDOW_S:
                retry = True
                self._emit("W8", cost, scopes, rid)
            elif outcome == "ok" and ((answered_at is not None and ts - answered_at <= DUPLICATE_WINDOW_S)
                                      or r.get("semantic_duplicate_of")):
                self._emit("W1", cost, scopes, rid)
            if outcome in ("ok", "cache_hit"):
                self._answered[fp] = ts
            elif status in NON_RETRYABLE:
                self._failed[fp] = ts
        # W8 (b) paid tokens of failed or cut attempts.
        failed_over = r.get("parent_request_id") not in (None, rid)
        if not retry and cost > 0 and (outcome in CUT_OUTCOMES or failed_over):
            self._emit("W8", cost, scopes, rid)

        # W3 agent thrashing.
        session = r.get("session")
        error_code = r.get("error_code")
        if error_code in LOOP_STOPS:
            self._emit("W3", cost, scopes, rid)
        elif session:
            thrash = False
            for marker in (r.get("loop_fp"), f"error:{error_code}" if error_code else None):
                if not marker:
                    continue
                key = (str(session), str(marker))
                last, run = self._loops.get(key, (ts, 0))
                run = run + 1 if ts - last <= THRASH_WINDOW_S else 1
                self._loops[key] = (ts, run)
                thrash = thrash or run >= THRASH_MIN
            if thrash:
                self._emit("W3", cost, scopes, rid)

        if outcome == "ok" and rates is not None:
            output = int(r.get("output", 0))
            # W2 model overkill.
            cheaper = DOWNSHIFT.get(self.pricer.resolved(model) or "")
            if (cheaper and not r.get("tools") and prompt <= SIMPLE_MAX_INPUT and output <= SIMPLE_MAX_OUTPUT):
                cheap_rates = self.pricer.rates(cheaper, self.day, prompt, None)
                if cheap_rates is not None:
                    saving = cost - cost_at(r, cheap_rates)
                    if saving > 0:
                        self._emit("W2", saving, scopes, rid)
            # W4 low utilisation (capacity, not graded).
            max_tokens = int(r.get("max_tokens", 0) or 0)
            if max_tokens >= LOW_UTIL_MIN_MAX_TOKENS and output * 100 < max_tokens * LOW_UTIL_PCT:
                self._emit("W4", round_scaled((max_tokens - output) * rates.output), scopes, rid)

        # W6 cache misses: a repeated cacheable prefix that read nothing; writes that are never read.
        prefix = r.get("prefix_fp")
        if prefix and rates is not None and outcome != "cache_hit":
            pkey = (model, str(prefix))
            tokens = int(r.get("prefix_tokens", 0))
            cache_read = int(r.get("cache_read", 0))
            last = self._prefixes.get(pkey)
            if (cache_read == 0 and last is not None and ts - last <= CACHE_TTL_S
                    and tokens >= min_cacheable(model)):
                tokens = min(tokens, int(r.get("input_uncached", 0)))
                self._emit("W6", round_scaled(tokens * max(rates.input - rates.cache_read, 0)), scopes, rid)
            self._prefixes[pkey] = ts
            if cache_read > 0 and pkey in self._writes:
                self._writes[pkey] = [p for p in self._writes[pkey] if p.expires < ts]
                if not self._writes[pkey]:
                    del self._writes[pkey]
            for field_, ttl in (("cache_write_5m", CACHE_TTL_S), ("cache_write_1h", CACHE_TTL_1H_S)):
                written = int(r.get(field_, 0))
                if written:
                    premium = round_scaled(written * max(getattr(rates, field_) - rates.input, 0))
                    self._writes.setdefault(pkey, []).append(_Pending(ts + ttl, premium, scopes, rid))

        # W7 oversized prompts.
        if outcome != "cache_hit" and rates is not None and prompt:
            slack = int(r.get("json_slack", 0)) + int(r.get("repeat_slack", 0))
            baseline = self.baseline_p95.get(model)
            if baseline is not None and prompt > baseline:
                slack += prompt - baseline
            slack = min(slack, prompt)
            if slack:
                self._emit("W7", round_scaled(slack * rates.input), scopes, rid)
            self._p95.setdefault(model, Counter())[prompt] += 1

        # W5 off-hours: hour buckets, judged at the end of the day.
        hour = int((ts - datetime.fromisoformat(self.day).replace(tzinfo=UTC).timestamp()) // 3600)
        if 0 <= hour < 24:
            self._hours_n[hour] += 1
            self._hours_cost[hour] += cost
            if self._off_hours[hour]:
                buckets = self._hour_scopes[hour]
                for key in scopes:
                    bucket = buckets.get(key)
                    if bucket is None:
                        bucket = buckets[key] = [0, 0]
                    bucket[0] += 1
                    bucket[1] += cost
                if len(self._hour_examples[hour]) < 5:
                    self._hour_examples[hour].append(rid)

        # V1-V3: the levers' savings.
        savings = r.get("savings") or {}
        if savings:
            for code, levers in (("V1", CACHE_LEVERS), ("V2", ("routing",)), ("V3", ("compression",))):
                saved = sum(int(savings.get(lever, 0)) for lever in levers)
                if saved:
                    self._emit(code, saved, scopes, rid)

    # -- end of day -----------------------------------------------------------------------------
    def finish(self) -> dict[str, int]:
        """Judge what needed the whole day (W5, unread writes); returns the day's p95 per route."""
        self._now = float("inf")
        self._prune()
        off = sorted(self._hours_n[h] for h in range(24) if self._off_hours[h])
        if off:
            norm = off[len(off) // 2]
            for hour in range(24):
                n = self._hours_n[hour]
                if not self._off_hours[hour] or n <= BURST_FACTOR * max(norm, BURST_FLOOR):
                    continue
                excess = n - norm
                examples = self._hour_examples[hour]
                self.total.signal("W5").add(self._hours_cost[hour] * excess // n, excess, None)
                for rid in examples:
                    self.total.signal("W5").add(0, 0, rid)
                for key, (scope_n, scope_cost) in self._hour_scopes[hour].items():
                    total = self._scope(key).signal("W5")
                    total.add(scope_cost * excess // n, scope_n * excess // n, None)
        return {route: percentile_95(counts) for route, counts in self._p95.items()}

    def by_dimension(self, dimension: str) -> dict[str, ScopeReport]:
        return {value: report for (dim, value), report in self.scopes.items() if dim == dimension}


def score_records(records: Iterable[dict[str, Any]], day: str, pricer: Pricer, timezone: str = "UTC",
                  baseline_p95: dict[str, int] | None = None,
                  progress: Callable[[int], None] | None = None) -> tuple[Scorer, dict[str, int]]:
    scorer = Scorer(day, pricer, timezone, dict(baseline_p95 or {}))
    for n, record in enumerate(records, 1):
        scorer.add(record)
        if progress and n % 100_000 == 0:
            progress(n)
    return scorer, scorer.finish()
