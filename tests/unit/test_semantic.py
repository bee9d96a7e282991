"""Semantic dedup's pure core: scope, LSH buckets, cosine, guards, and the paraphrase/contrast set
with its precision printed (with the deterministic test embeddings of tests/fakes/embeddings.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meterline.cache import semantic as s
from meterline.providers.sim.embeddings import embed as sim_embed
from tests.fakes.embeddings import embed

EMBEDDERS = {"simulator (sim/text-embedding-3-small)": lambda text: sim_embed(text, 256),
             "test fake (tests/fakes/embeddings.py)": embed}

PAIRS = json.loads((Path(__file__).parent.parent / "data/semantic_pairs.json").read_text())["pairs"]


def chat(text: str, **params) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": text}], **params}


def test_scope_separates_workspaces_models_parameters_and_system_prompts():
    base = s.query_of("ws1", "chat.completions", "openai/gpt-4o-mini", chat("hi"))
    assert base.scope == s.query_of("ws1", "chat.completions", "openai/gpt-4o-mini",
                                    {**chat("hello"), "stream": True, "user": "u1"}).scope
    others = [s.query_of("ws2", "chat.completions", "openai/gpt-4o-mini", chat("hi")),
              s.query_of("ws1", "chat.completions", "openai/gpt-4o", chat("hi")),
              s.query_of("ws1", "chat.completions", "openai/gpt-4o-mini", chat("hi", temperature=0.2)),
              s.query_of("ws1", "chat.completions", "openai/gpt-4o-mini",
                         {**chat("hi"), "messages": [{"role": "system", "content": "Be long."},
                                                     {"role": "user", "content": "hi"}]}),
              s.query_of("ws1", "responses", "openai/gpt-4o-mini", {"model": "gpt-4o-mini", "input": "hi"})]
    assert len({base.scope, *(q.scope for q in others)}) == 6


def test_what_serve_mode_refuses():
    assert s.query_of("w", "chat.completions", "m", chat("hi")).servable
    tools = s.query_of("w", "chat.completions", "m", {**chat("hi"), "tools": [{"type": "function"}]})
    assert not tools.servable and tools.reason == "tools defined"
    long = chat("hi")
    long["messages"] += [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}] * 2
    assert "turns" in s.query_of("w", "chat.completions", "m", long).reason
    image = {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
    assert not s.query_of("w", "chat.completions", "m", image).servable
    assert s.query_of("w", "chat.completions", "m", chat("x" * 9000)) is None  # too long to embed


def test_buckets_are_deterministic_and_near_vectors_share_one():
    a = s.normalize(embed("How do I reset my password?"))
    b = s.normalize(embed("How do I reset my password"))
    far = s.normalize(embed("Write a haiku about the sea"))
    assert s.buckets("scope", a) == s.buckets("scope", a)
    assert set(s.buckets("scope", a)) & set(s.buckets("scope", b))
    assert not set(s.buckets("scope", a)) & set(s.buckets("scope", far))
    assert all(k.startswith("scope#") for k in s.buckets("scope", a))


def test_quantized_vectors_keep_cosine():
    a, b = s.normalize(embed("export my data to CSV")), s.normalize(embed("export all my data to CSV"))
    assert abs(s.cosine(s.dequantize(s.quantize(a)), b) - s.cosine(a, b)) < 0.01


@pytest.mark.parametrize("a, b, blocked", [
    ("turn on dark mode", "turn off dark mode", True),
    ("turn on dark mode", "disable dark mode", True),
    ("turn on dark mode", "enable dark mode", False),
    ("can I log in", "can I log out", True),
    ("weather in Paris", "Paris weather", False),
    ("refund order 1234", "refund order 1243", True),
    ("is it safe", "is it not safe", True),
    ("is it safe", "isn't it safe", True),
    ("email bob@example.com", "email bob@example.org", True),
    ("what does Alice want", "what does Bob want", True),
])
def test_guards(a, b, blocked):
    assert (s.guard_mismatch(s.guard_of(a), s.guard_of(b)) is not None) is blocked


@pytest.mark.parametrize("raw", [{"mode": "always"}, {"threshold": 0.9, "mode": "serve"}, {"threshold": 2},
                                 {"embedding_model": "ada"}, {"ttl_s": 1}, {"color": "red"}])
def test_settings_are_validated(raw):
    with pytest.raises(ValueError):
        s.Settings.from_dict(raw)


def run_pairs(embedder=embed, threshold: float = s.DEFAULT_THRESHOLD, guards: bool = True) -> dict[str, int]:
    counts = {"true_hits": 0, "false_hits": 0, "same": 0, "different": 0}
    for pair in PAIRS:
        stored = s.query_of("ws", "chat.completions", "m", chat(pair["stored"]))
        incoming = s.query_of("ws", "chat.completions", "m", chat(pair["incoming"]))
        unit_a, unit_b = s.normalize(embedder(stored.text)), s.normalize(embedder(incoming.text))
        guard_a = s.guard_of(stored.text) if guards else s.Guard((), (), ())
        entry = s.Entry("e1", s.dequantize(s.quantize(unit_a)), guard_a, "req_a", 100, servable=True)
        found = bool(set(s.buckets(stored.scope, unit_a)) & set(s.buckets(incoming.scope, unit_b)))
        guard_b = s.guard_of(incoming.text) if guards else s.Guard((), (), ())
        match = s.best_match(unit_b, guard_b, [entry] if found else [], threshold)
        served = match is not None and match.blocked is None
        counts["same" if pair["same"] else "different"] += 1
        if served:
            counts["true_hits" if pair["same"] else "false_hits"] += 1
    return counts


@pytest.mark.parametrize("embedder", list(EMBEDDERS))
def test_paraphrase_contrast_precision(capsys, embedder):
    with_guards, without = run_pairs(EMBEDDERS[embedder]), run_pairs(EMBEDDERS[embedder], guards=False)
    with capsys.disabled():
        print(f"\nsemantic serve at cosine >= {s.DEFAULT_THRESHOLD}, {embedder} embeddings:", end="")
        for name, c in (("guards on", with_guards), ("guards off", without)):
            served = c["true_hits"] + c["false_hits"]
            precision = c["true_hits"] / served if served else 1.0
            print(f"\n  {name}: {served} served, {c['true_hits']} right, {c['false_hits']} wrong (precision "
                  f"{precision:.2f}); {c['true_hits']}/{c['same']} paraphrases served, {c['different']} contrasts",
                  end="")
        print()
    assert with_guards["false_hits"] == 0  # "turn on dark mode" never gets "turn off dark mode"'s answer
    assert with_guards["true_hits"] >= 3
    assert without["false_hits"] > 0  # the embeddings alone would serve wrong answers: the guards matter
