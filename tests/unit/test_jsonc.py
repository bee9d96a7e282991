"""meterline.jsonc: orjson where it agrees with json, json's answer wherever orjson refuses."""

from __future__ import annotations

import json

import pytest

from meterline import jsonc

VALUES = [
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "héllo ✓ 你好 🙂"}], "n": 2, "ok": True,
     "none": None, "nested": {"b": [1, 2, {"c": "d"}], "a": -9_223_372_036_854_775_808}},
    {"Item": {"pk": {"S": "ws#2026-12-02"}, "cost": {"N": "123456"}, "tags": {"M": {"k": {"S": "v\n\"q\""}}}}},
    [], {}, "", 0, -1, 18_446_744_073_709_551_615,
]


@pytest.mark.parametrize("value", VALUES)
def test_output_is_compact_utf8_json_as_the_stdlib_writes_it(value):
    assert jsonc.dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert jsonc.dumps(value, sort_keys=True) == json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                                                            sort_keys=True).encode()
    assert jsonc.loads(jsonc.dumps(value)) == value


@pytest.mark.parametrize("value", [{"big": 10**30}, {"lone": "\ud800"}, {1: "non-str key"}])
def test_what_orjson_refuses_to_encode_is_encoded_as_ascii_json(value):
    out = jsonc.dumps(value)
    assert out == json.dumps(value, separators=(",", ":")).encode()
    out.decode("ascii")  # valid for any reader, surrogate or not
    assert json.loads(out) == {str(k) if isinstance(k, int) else k: v for k, v in value.items()}


def test_default_applies_and_unknown_types_still_raise():
    assert jsonc.dumps({"s": {1, 2}}, default=sorted) == b'{"s":[1,2]}'
    with pytest.raises(TypeError):
        jsonc.dumps({"o": object()})


@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": -Infinity}'])
def test_what_orjson_refuses_to_decode_is_decoded_as_json_does(raw):
    assert repr(jsonc.loads(raw)) == repr(json.loads(raw))


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff", b'{"a":1}x'])
def test_invalid_json_raises_value_error(raw):
    with pytest.raises(ValueError):
        jsonc.loads(raw)
