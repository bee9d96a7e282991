"""JSON Schema in, a conforming instance out (deterministic), and OpenAI's strict-mode schema rules.

`instance` covers what tool and structured-output schemas use: object/array/string/number/integer/
boolean/null, `enum`, `const`, `anyOf`/`oneOf`/`allOf`, local `$ref` (`#/$defs/...`,
`#/definitions/...`), string formats, length/item/number bounds. Strings prefer `hints` (words from
the user's message, e.g. the city a weather tool should get) over filler. Pure.
"""

from __future__ import annotations

import hashlib
import re

try:  # the regex parser: re._parser from 3.11, sre_parse before
    import re._parser as _sre_parser  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    import sre_parse as _sre_parser  # type: ignore[no-redef]
from typing import Any

_FORMATS = {"date-time": "2026-01-15T09:30:00Z", "date": "2026-01-15", "time": "09:30:00", "email": "user@example.com",
            "uri": "https://example.com/", "url": "https://example.com/", "hostname": "example.com",
            "ipv4": "192.0.2.1", "ipv6": "2001:db8::1", "duration": "P1D"}
_FILLER = ("alpha", "budget", "cobalt", "delta", "ember", "falcon", "garnet", "harbor")
_MAX_DEPTH = 6


def _pick(seed: bytes, i: int, n: int) -> int:
    return seed[i % len(seed)] % n if n else 0


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    if not ref.startswith("#"):
        return {}
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _merge_all_of(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if isinstance(part, dict) and "$ref" in part:
            part = _resolve(part["$ref"], root)
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties":
                merged.setdefault("properties", {}).update(value)
            elif key == "required":
                merged["required"] = sorted({*merged.get("required", []), *value})
            else:
                merged.setdefault(key, value)
    return merged


class _Gen:
    def __init__(self, root: dict[str, Any], seed: bytes, hints: list[str]):
        self.root = root
        self.seed = seed
        self.hints = list(hints)
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n

    def value(self, schema: Any, name: str, depth: int) -> Any:
        if schema is True or not isinstance(schema, dict):
            return self.string({}, name)
        if "$ref" in schema:
            target = _resolve(schema["$ref"], self.root)
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            return self.value({**target, **extra}, name, depth + 1)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][_pick(self.seed, self.next(), len(schema["enum"]))]
        if "allOf" in schema:
            return self.value(_merge_all_of(schema, self.root), name, depth)
        for key in ("anyOf", "oneOf"):
            options = [o for o in schema.get(key) or [] if isinstance(o, dict)]
            if options:
                non_null = [o for o in options if o.get("type") != "null"]
                if depth >= _MAX_DEPTH and len(non_null) < len(options):
                    return None  # a recursive schema ends on its null branch
                base = {k: v for k, v in schema.items() if k != key}
                return self.value({**base, **(non_null or options)[0]}, name, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"] or ["null"]
            kind = kinds[0]
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, name, depth)
        if kind == "integer":
            return self.integer(schema)
        if kind == "number":
            return self.number(schema)
        if kind == "boolean":
            return _pick(self.seed, self.next(), 2) == 0
        if kind == "null":
            return None
        return self.string(schema, name)

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        out: dict[str, Any] = {}
        for key, sub in props.items():
            if depth >= _MAX_DEPTH and key not in required:
                continue
            out[key] = self.value(sub, key, depth + 1)
        return out

    def array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        size = low if depth >= _MAX_DEPTH else max(low, 2)
        if high is not None:
            size = min(size, int(high))
        size = max(size, min(len(prefix), int(high) if high is not None else len(prefix)))
        items = schema.get("items", {})
        out = [self.value(prefix[i] if i < len(prefix) else items, name, depth + 1) for i in range(size)]
        if schema.get("uniqueItems") and len({repr(v) for v in out}) < len(out):
            out = out[:1] + [v for v in out[1:] if v != out[0]]
        return out

    def integer(self, schema: dict[str, Any]) -> int:
        low, high = self.bounds(schema, integer=True)
        value = low + _pick(self.seed, self.next(), max(1, min(high - low + 1, 100)))
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            value = -(-value // step) * step
            if value > high:
                value -= step
        return int(value)

    def number(self, schema: dict[str, Any]) -> float:
        low, high = self.bounds(schema, integer=False)
        value = low + (_pick(self.seed, self.next(), 100) / 100) * min(high - low, 100.0)
        return round(value, 2) if round(value, 2) >= low and round(value, 2) <= high else value

    @staticmethod
    def bounds(schema: dict[str, Any], integer: bool) -> tuple[Any, Any]:
        gap = 1 if integer else 0.01
        low = schema.get("minimum")
        if low is None and schema.get("exclusiveMinimum") is not None:
            low = schema["exclusiveMinimum"] + gap
        high = schema.get("maximum")
        if high is None and schema.get("exclusiveMaximum") is not None:
            high = schema["exclusiveMaximum"] - gap
        if low is None:
            low = 0 if high is None or high >= 0 else high - 100
        if high is None:
            high = low + 100
        if integer:
            low, high = int(-(-low // 1)), int(high // 1)
        return low, max(high, low)

    def string(self, schema: dict[str, Any], name: str) -> str:
        fmt = schema.get("format")
        if fmt == "uuid":
            raw = hashlib.sha256(self.seed + str(self.next()).encode()).hexdigest()
            text = f"{raw[:8]}-{raw[8:12]}-4{raw[13:16]}-a{raw[17:20]}-{raw[20:32]}"
        elif fmt in _FORMATS:
            text = _FORMATS[fmt]
        elif self.hints:
            text = self.hints.pop(0)
        else:
            text = f"{name or 'value'} {_FILLER[_pick(self.seed, self.next(), len(_FILLER))]}".strip()
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            text = _match_pattern(pattern, text)
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        if len(text) < low:
            text = (text + " " + "x" * low)[:low] if text else "x" * low
        if high is not None:
            text = text[: int(high)]
        return text


def _match_pattern(pattern: str, text: str) -> str:
    """The hint if it matches the pattern, else the shortest string the regex parser says matches."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return text
    if compiled.search(text):
        return text
    try:
        candidate = _from_regex(_sre_parser.parse(pattern))
    except Exception:
        return text
    return candidate if compiled.search(candidate) else text


def _from_regex(parsed: Any) -> str:
    out = []
    for op, arg in parsed:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append("a" if chr(arg) != "a" else "b")
        elif name == "ANY":
            out.append("a")
        elif name == "IN":
            out.append(_class_char(arg))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, sub = arg
            out.append(_from_regex(sub) * low)
        elif name == "SUBPATTERN":
            out.append(_from_regex(arg[-1]))
        elif name == "BRANCH":
            out.append(_from_regex(arg[1][0]))
        elif name == "CATEGORY":
            out.append(_category_char(str(arg)))
    return "".join(out)


def _class_char(items: Any) -> str:
    negate = any(str(op) == "NEGATE" for op, _ in items)
    if negate:
        banned = {chr(a) for op, a in items if str(op) == "LITERAL"}
        return next(c for c in "aZ0_ -" if c not in banned)
    for op, arg in items:
        if str(op) == "LITERAL":
            return chr(arg)
        if str(op) == "RANGE":
            return chr(arg[0])
        if str(op) == "CATEGORY":
            return _category_char(str(arg))
    return "a"


def _category_char(category: str) -> str:
    if "NOT_DIGIT" in category:
        return "a"
    if "DIGIT" in category:
        return "0"
    if "NOT_SPACE" in category or ("WORD" in category and "NOT" not in category):
        return "a"
    if "SPACE" in category:
        return " "
    return "-"


def instance(schema: Any, seed: bytes, hints: list[str] | None = None) -> Any:
    root = schema if isinstance(schema, dict) else {}
    return _Gen(root, seed, hints or []).value(schema, "", 0)


def strict_problem(schema: Any) -> str | None:
    """What OpenAI's strict mode (structured outputs, strict function tools) refuses in a schema, in its
    words, or None: every object needs `additionalProperties: false` and all its keys `required`."""

    def walk(node: Any, context: tuple[str, ...]) -> str | None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                found = walk(item, (*context, str(i)))
                if found:
                    return found
            return None
        if not isinstance(node, dict):
            return None
        where = f"In context={context!r}, " if context else "In context=(), "
        is_object = node.get("type") == "object" or (isinstance(node.get("type"), list) and "object" in node["type"])
        if is_object or "properties" in node:
            if node.get("additionalProperties") is not False:
                return where + "'additionalProperties' is required to be supplied and to be false."
            keys = list((node.get("properties") or {}).keys())
            missing = [k for k in keys if k not in (node.get("required") or [])]
            if missing:
                return (where + "'required' is required to be supplied and to be an array including every key in "
                        f"properties. Missing '{missing[0]}'.")
        for key in ("properties", "$defs", "definitions"):
            for name, sub in (node.get(key) or {}).items():
                found = walk(sub, (*context, key, name))
                if found:
                    return found
        for key in ("items", "anyOf", "oneOf", "allOf", "prefixItems"):
            if key in node:
                found = walk(node[key], (*context, key))
                if found:
                    return found
        return None

    if not isinstance(schema, dict):
        return "In context=(), schema must be a JSON Schema of 'type: \"object\"'."
    return walk(schema, ())
