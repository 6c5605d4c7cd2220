"""Pod protocol validation against the shared JSON Schema (shared/protocol/pod-protocol.schema.json).

The schema file is the contract. It is found, in order:
  1. $EDGESERVE_POD_SCHEMA, if set;
  2. the repository's shared/ folder, relative to this file (source checkouts, editable installs);
  3. the copy shipped as package data (edgeserve_pod/schema/), for a wheel installed elsewhere.
tests/test_protocol.py fails when the packaged copy differs from the shared file.

Validation is plain `jsonschema` (draft 2020-12) with one speed-up: for an array whose items are
a `$ref` to a plain integer-range definition (TokenId), an item that is an integer in range is
passed in one Python comparison; every other item is judged by jsonschema itself, so errors and
their paths are jsonschema's. Without it a 100K-token prompt takes ~5 s to validate (~54 us/item
through $ref resolution), which would stall the pod's event loop.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

SCHEMA_NAME = "pod-protocol.schema.json"
_REPO_SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "protocol" / SCHEMA_NAME
_PACKAGED_SCHEMA = Path(__file__).resolve().parent / "schema" / SCHEMA_NAME

ERROR_CODES = (
    "invalid_request", "unknown_model", "prompt_too_long", "overloaded",
    "cancelled", "kv_transfer_failed", "internal_error", "unauthorized",
)


class ProtocolError(Exception):
    """A request the pod refuses before queueing anything. `status` is the HTTP status to answer."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_request",
                 status: int = 400, request_id: str | None = None):
        super().__init__(message)
        assert code in ERROR_CODES, code
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.request_id = request_id

    def record(self) -> dict:
        return error_record(self.code, self.message, self.param, self.request_id)


def error_record(code: str, message: str, param: str | None = None, request_id: str | None = None) -> dict:
    """An ErrorRecord (schema $defs/ErrorRecord)."""
    return {"type": "error", "request_id": request_id,
            "error": {"code": code, "message": message, "param": param}}


def schema_path() -> Path:
    env = os.environ.get("EDGESERVE_POD_SCHEMA")
    if env:
        return Path(env)
    if _REPO_SCHEMA.is_file():
        return _REPO_SCHEMA
    if _PACKAGED_SCHEMA.is_file():
        return _PACKAGED_SCHEMA
    raise FileNotFoundError(
        f"pod protocol schema not found: looked at $EDGESERVE_POD_SCHEMA, {_REPO_SCHEMA} and {_PACKAGED_SCHEMA}")


@cache
def load_schema() -> dict:
    with open(schema_path(), encoding="utf-8") as f:
        return json.load(f)


def _int_range_refs(schema: dict) -> dict[int, tuple[int, int]]:
    """id(subschema) -> (min, max) for every {"$ref": "#/$defs/X"} where X is a plain integer range."""
    defs = schema.get("$defs", {})
    ranges = {}
    for name, d in defs.items():
        if d.get("type") == "integer" and set(d) <= {"type", "minimum", "maximum", "description"} \
                and "minimum" in d and "maximum" in d:
            ranges[f"#/$defs/{name}"] = (d["minimum"], d["maximum"])
    found: dict[int, tuple[int, int]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"$ref"} and node["$ref"] in ranges:
                found[id(node)] = ranges[node["$ref"]]
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return found


def _make_validator_class(schema: dict):
    fast = _int_range_refs(schema)
    slow_items = Draft202012Validator.VALIDATORS["items"]

    def items(validator, item_schema, instance, parent):
        bounds = fast.get(id(item_schema))
        if bounds is None or not isinstance(instance, list) or "prefixItems" in parent:
            yield from slow_items(validator, item_schema, instance, parent)
            return
        lo, hi = bounds
        for i, x in enumerate(instance):
            # Same test as jsonschema's integer type (int but not bool, or an integral float)
            # plus the range: an item that passes it is valid; the rest are judged by jsonschema.
            if (type(x) is int or (type(x) is float and x.is_integer())) and lo <= x <= hi:
                continue
            yield from validator.descend(instance=x, schema=item_schema, path=i)

    return validators.extend(Draft202012Validator, {"items": items})


@cache
def _validator(def_name: str):
    schema = load_schema()
    if def_name not in schema["$defs"]:
        raise KeyError(f"no $defs/{def_name} in {schema_path()}")
    # Shallow copy: nested dicts stay the same objects, so the fast-path ids still match.
    root = dict(schema, **{"$ref": f"#/$defs/{def_name}"})
    return _make_validator_class(schema)(root)


@cache
def _plain_validator(def_name: str) -> Draft202012Validator:
    """jsonschema with no speed-up; tests compare it against `_validator`."""
    schema = load_schema()
    return Draft202012Validator(dict(schema, **{"$ref": f"#/$defs/{def_name}"}))


def _path(parts) -> str | None:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def _deepest(error: ValidationError) -> ValidationError:
    """For oneOf/anyOf failures, the branch error that got furthest into the instance."""
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error


def error_param(error: ValidationError) -> str | None:
    """JSON path (`sampling.temperature`, `prompt_token_ids[3]`) of what failed; None = the body."""
    error = _deepest(error)
    parts = list(error.absolute_path)
    inst = error.instance
    if error.validator == "required" and isinstance(inst, dict):
        missing = [k for k in error.validator_value if k not in inst]
        if missing:
            parts.append(missing[0])
    elif error.validator == "additionalProperties" and isinstance(inst, dict):
        known = set(error.schema.get("properties", {}))
        extra = sorted(k for k in inst if k not in known)
        if extra:
            parts.append(extra[0])
    return _path(parts)


def first_error(def_name: str, message: Any) -> ValidationError | None:
    return next(iter(_validator(def_name).iter_errors(message)), None)


def is_valid(def_name: str, message: Any) -> bool:
    return first_error(def_name, message) is None


def validate(def_name: str, message: Any) -> None:
    """Raise ProtocolError(invalid_request, param=JSON path) if `message` is not a valid `def_name`."""
    err = first_error(def_name, message)
    if err is None:
        return
    param = error_param(err)
    shown = _deepest(err).message
    if len(shown) > 300:  # jsonschema quotes the instance; a 1M-item array would be quoted whole
        shown = shown[:300] + "…"
    raise ProtocolError(f"{param or 'body'}: {shown}", param=param)


def parse_json_body(raw: bytes) -> Any:
    """Strict JSON from bytes: UTF-8 only, no NaN/Infinity, bounded depth and digits."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"body is not valid UTF-8 (byte {e.start})") from None

    def no_constants(name: str):
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constants)
    except RecursionError:
        raise ProtocolError("body: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, over-long integers, NaN
        raise ProtocolError(f"body is not valid JSON: {e}") from None
