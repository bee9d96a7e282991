"""The routing lever's difficulty classifier (levers/routing.py) on the labelled request set
(tests/data/routing_requests.json): accuracy, hard recall and cheap share per split, and its speed.

The split was fixed (by a hash of each request) before the classifier was tuned. Only the train
split is used to choose anything; the holdout split is reported, never tuned on.

    python bench/routing_classifier.py              # evaluate the shipped weights (train, then holdout)
    python bench/routing_classifier.py --fit        # refit POINTS/BASE on the train split and print them

Read hard recall first: a hard request sent to the cheap model is the costly mistake (a worse
answer), an easy one sent to the strong model only costs money.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers"), str(ROOT)]

from meterline.levers import routing  # noqa: E402

DATA = ROOT / "tests/data/routing_requests.json"
# Signals that can only make a request look harder (their weight is never negative), those that can
# only make it look easier, and the rest (free sign).
EASIER = {"brief", "simple_task", "greeting"}
FREE = {"json_mode"}
SCALE = 10.0  # points per logit unit
# Set by hand, not fitted: the labelled set has one request with a large max_tokens and none with an
# output history (the gateway's per-route average), so a fitted weight would mean nothing.
BY_HAND = {"output": 10.0}
TARGET_RECALL = 0.95  # on the train split's out-of-fold scores


def load() -> list[dict[str, Any]]:
    return json.loads(DATA.read_text())["requests"]


def vectors(items: list[dict[str, Any]]) -> tuple[list[str], list[list[float]], list[int]]:
    rows = [routing.signals(routing.features("chat.completions", item["body"])) for item in items]
    names = list(rows[0])
    return names, [[row[n] for n in names] for row in rows], [int(item["label"] == "hard") for item in items]


def fit(names: list[str], x: list[list[float]], y: list[int], l2: float = 0.05, steps: int = 3000,
        rate: float = 0.1) -> tuple[float, list[float]]:
    """Logistic regression by projected gradient descent: L2 on the weights, the signs of EASIER
    weights <= 0 and of the others >= 0 (except FREE)."""
    n, d = len(x), len(names)
    bias, w = 0.0, [0.0] * d
    for _ in range(steps):
        gb, gw = 0.0, [l2 * wi for wi in w]
        for xi, yi in zip(x, y, strict=True):
            z = bias + sum(wj * xj for wj, xj in zip(w, xi, strict=True))
            err = 1 / (1 + math.exp(-z)) - yi
            gb += err / n
            for j, xj in enumerate(xi):
                if xj:
                    gw[j] += err * xj / n
        bias -= rate * gb
        for j, name in enumerate(names):
            w[j] -= rate * gw[j]
            if name in EASIER:
                w[j] = min(w[j], 0.0)
            elif name not in FREE:
                w[j] = max(w[j], 0.0)
    return bias, w


def logit(bias: float, w: list[float], xi: list[float]) -> float:
    return bias + sum(wj * xj for wj, xj in zip(w, xi, strict=True))


def out_of_fold(names: list[str], x: list[list[float]], y: list[int], folds: int = 5) -> list[float]:
    scores = [0.0] * len(x)
    for k in range(folds):
        train = [i for i in range(len(x)) if i % folds != k]
        bias, w = fit(names, [x[i] for i in train], [y[i] for i in train])
        for i in range(k, len(x), folds):
            scores[i] = logit(bias, w, x[i])
    return scores


def refit() -> None:
    items = [item for item in load() if item["split"] == "train"]
    names, x, y = vectors(items)
    oof = out_of_fold(names, x, y)
    hard_scores = sorted(s for s, yi in zip(oof, y, strict=True) if yi)
    # The highest threshold that keeps TARGET_RECALL of the train split's hard requests (out of fold).
    keep = math.ceil(TARGET_RECALL * len(hard_scores))
    threshold = hard_scores[len(hard_scores) - keep] - 1e-6
    cheap = sum(1 for s in oof if s < threshold) / len(oof)
    recall = sum(1 for s, yi in zip(oof, y, strict=True) if yi and s >= threshold) / sum(y)
    bias, w = fit(names, x, y)
    print(f"train split: {len(items)} requests; out-of-fold threshold {threshold:.3f} "
          f"(hard recall {recall:.2f}, cheap share {cheap:.2f})")
    print(f"BASE = {round(routing.DEFAULT_THRESHOLD + SCALE * (bias - threshold))}")
    print("POINTS: dict[str, float] = {")
    for name, wj in zip(names, w, strict=True):
        if name in BY_HAND:
            print(f'    "{name}": {BY_HAND[name]:.1f},  # by hand (see BY_HAND)')
        elif abs(wj) >= 0.005:
            print(f'    "{name}": {SCALE * wj:.1f},')
    print("}")


def evaluate() -> None:
    items = load()
    decisions = []
    for item in items:
        d = routing.difficulty(routing.features("chat.completions", item["body"]))
        decisions.append((item, d, "strong" if d.score >= routing.DEFAULT_THRESHOLD else "cheap"))
    timings = []
    for item in items:  # features + score per request, best of 5 rounds of 20 (a loaded machine is noisy)
        rounds = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(20):
                routing.difficulty(routing.features("chat.completions", item["body"]))
            rounds.append((time.perf_counter() - started) / 20 * 1e6)
        timings.append(min(rounds))
    timings.sort()
    print(f"Routing classifier on {DATA.relative_to(ROOT)} (threshold {routing.DEFAULT_THRESHOLD}); "
          "hard recall first.\n")
    print(f"{'split':8} {'requests':>8} {'easy':>5} {'hard':>5} {'hard recall':>12} {'easy->cheap':>12} "
          f"{'accuracy':>9} {'cheap share':>12}")
    for split in ("train", "holdout"):
        rows = [(item["label"], tier) for item, _, tier in decisions if item["split"] == split]
        hard = [tier for label, tier in rows if label == "hard"]
        easy = [tier for label, tier in rows if label == "easy"]
        right = sum(1 for label, tier in rows if (label == "hard") == (tier == "strong"))
        print(f"{split:8} {len(rows):>8} {len(easy):>5} {len(hard):>5} "
              f"{hard.count('strong'):>4}/{len(hard):<3} {hard.count('strong') / len(hard):.2f} "
              f"{easy.count('cheap'):>4}/{len(easy):<3} {easy.count('cheap') / len(easy):.2f} "
              f"{right / len(rows):>9.2f} {sum(1 for _, t in rows if t == 'cheap') / len(rows):>12.2f}")
    print(f"\nfeatures + score per request: median {timings[len(timings) // 2]:.0f} µs, "
          f"p90 {timings[len(timings) * 9 // 10]:.0f} µs, max {timings[-1]:.0f} µs "
          f"(the longest prompt, {max(len(json.dumps(i['body'])) for i in items):,} bytes); load {load_average()}")
    print("\nHoldout mistakes (label -> tier: score, reason, the label's why):")
    for item, d, tier in decisions:
        if item["split"] == "holdout" and (item["label"] == "hard") != (tier == "strong"):
            text = next((m["content"] for m in reversed(item["body"]["messages"]) if m["role"] == "user"), "")
            print(f"  {item['label']} -> {tier}: {d.score} ({'; '.join(d.reasons)}) | {item['why']} | "
                  f"{str(text)[:90]!r}")


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit", action="store_true", help="refit the weights on the train split and print them")
    args = parser.parse_args()
    refit() if args.fit else evaluate()


if __name__ == "__main__":
    main()
