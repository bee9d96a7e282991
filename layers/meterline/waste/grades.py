"""Scope totals, and the grade they earn. Pure, integers only.

    waste      = min(Σ $ of the billed signals (W1 W2 W3 W5 W6 W7 W8), spend)
    waste %    = waste / spend                       (spend 0: 0 %)
    score      = floor(100 x (spend - waste) / spend) (spend 0: 100)
    grade      S ≤ 3 %, A ≤ 10 %, B ≤ 20 %, C ≤ 35 %, D > 35 %  (compared exactly: 100·waste ≤ t·spend)
    veto       any W3 agent thrashing in the scope caps the grade at D
    rating     S, A → justified; B, C → questionable; D → wasteful
    look first the three signals with the most $ (W4 included: it is where headroom is), ties by code
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meterline.waste import BILLED, SIGNALS

GRADE_LIMITS = (("S", 3), ("A", 10), ("B", 20), ("C", 35))  # waste % at most
RATINGS = {"S": "justified", "A": "justified", "B": "questionable", "C": "questionable", "D": "wasteful"}
MAX_EXAMPLES = 5


@dataclass
class SignalTotal:
    micros: int = 0
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, micros: int, count: int, request_id: str | None) -> None:
        self.micros += micros
        self.count += count
        if request_id and len(self.examples) < MAX_EXAMPLES and request_id not in self.examples:
            self.examples.append(request_id)

    def merge(self, other: SignalTotal) -> None:
        self.micros += other.micros
        self.count += other.count
        for rid in other.examples:
            if len(self.examples) < MAX_EXAMPLES and rid not in self.examples:
                self.examples.append(rid)


def grade_for(waste: int, spend: int, thrashing: bool) -> str:
    if thrashing:
        return "D"
    for grade, limit in GRADE_LIMITS:
        if waste * 100 <= limit * spend:
            return grade
    return "D"


@dataclass
class ScopeReport:
    spend_micros: int = 0
    requests: int = 0
    signals: dict[str, SignalTotal] = field(default_factory=dict)

    def signal(self, code: str) -> SignalTotal:
        found = self.signals.get(code)
        if found is None:
            found = self.signals[code] = SignalTotal()
        return found

    def merge(self, other: ScopeReport) -> None:
        self.spend_micros += other.spend_micros
        self.requests += other.requests
        for code, total in other.signals.items():
            self.signal(code).merge(total)

    @property
    def waste_micros(self) -> int:
        return min(sum(self.signals[c].micros for c in BILLED if c in self.signals), self.spend_micros)

    @property
    def thrashing(self) -> bool:
        return "W3" in self.signals and self.signals["W3"].count > 0

    @property
    def grade(self) -> str:
        return grade_for(self.waste_micros, self.spend_micros, self.thrashing)

    @property
    def score(self) -> int:
        if self.spend_micros == 0:
            return 100
        return (self.spend_micros - self.waste_micros) * 100 // self.spend_micros

    @property
    def waste_pct_bp(self) -> int:
        """Waste % in basis points (1234 = 12.34 %), floored."""
        return self.waste_micros * 10_000 // self.spend_micros if self.spend_micros else 0

    def look_first(self) -> list[str]:
        ranked = sorted(((t.micros, code) for code, t in self.signals.items()
                         if code.startswith("W") and (t.micros or t.count)), key=lambda x: (-x[0], x[1]))
        return [code for _, code in ranked[:3]]

    def as_dict(self) -> dict[str, Any]:
        grade = self.grade
        return {
            "spend_micros": self.spend_micros, "requests": self.requests, "waste_micros": self.waste_micros,
            "waste_pct_bp": self.waste_pct_bp, "score": self.score, "grade": grade, "rating": RATINGS[grade],
            "look_first": self.look_first(),
            "signals": {code: {"name": SIGNALS[code], "micros": t.micros, "count": t.count,
                               "examples": list(t.examples)}
                        for code, t in sorted(self.signals.items()) if t.micros or t.count},
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScopeReport:
        report = cls(int(raw.get("spend_micros", 0)), int(raw.get("requests", 0)))
        for code, s in (raw.get("signals") or {}).items():
            report.signals[code] = SignalTotal(int(s["micros"]), int(s["count"]), list(s.get("examples") or []))
        return report
