"""edgeserve_pod.protocol: the validator (fast path == plain jsonschema), error paths, strict JSON."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from edgeserve_pod import protocol
from edgeserve_pod.protocol import ProtocolError

SHARED_SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "protocol" / protocol.SCHEMA_NAME
GOOD = {"request_id": "req-1", "model": "m", "prompt_token_ids": [1, 2, 3], "max_tokens": 4,
        "sampling": {"temperature": 0.5, "top_p": 0.9, "top_k": 5, "seed": 3}, "stop_token_ids": [7]}


def test_packaged_schema_copy_matches_shared():
    packaged = Path(protocol.__file__).parent / "schema" / protocol.SCHEMA_NAME
    assert packaged.read_bytes() == SHARED_SCHEMA.read_bytes(), (
        "edgeserve_pod/schema/ is stale: cp shared/protocol/pod-protocol.schema.json gpu-backend/edgeserve_pod/schema/")


def test_schema_is_found_in_the_repo_first():
    assert protocol.schema_path() == SHARED_SCHEMA


def test_the_fast_path_covers_token_arrays():
    ranges = set(protocol._int_range_refs(protocol.load_schema()).values())
    assert ranges == {(0, 4294967295)}  # TokenId, wherever it is used as array items


@pytest.mark.parametrize("message, param", [
    ({**GOOD, "prompt_token_ids": [1, -1]}, "prompt_token_ids[1]"),
    ({**GOOD, "prompt_token_ids": [1, 2**32]}, "prompt_token_ids[1]"),
    ({**GOOD, "prompt_token_ids": [True]}, "prompt_token_ids[0]"),
    ({**GOOD, "prompt_token_ids": "1 2 3"}, "prompt_token_ids"),
    ({**GOOD, "sampling": {"temperature": "hot"}}, "sampling.temperature"),
    ({**GOOD, "sampling": {"top_k": 1.5}}, "sampling.top_k"),
    ({**GOOD, "sampling": {"mirostat": 1}}, "sampling.mirostat"),
    ({**GOOD, "slo": {"ttft_ms": 5}}, "slo.class"),
    ({k: v for k, v in GOOD.items() if k != "max_tokens"}, "max_tokens"),
    ({**GOOD, "stop_token_ids": [1, 1]}, "stop_token_ids"),
    ({**GOOD, "extra": 1}, "extra"),
    ([GOOD], None),
    (None, None),
])
def test_error_param_is_the_json_path(message, param):
    with pytest.raises(ProtocolError) as e:
        protocol.validate("GenerateRequest", message)
    assert e.value.param == param
    assert e.value.code == "invalid_request" and e.value.status == 400
    assert protocol.is_valid("ErrorRecord", e.value.record())


def test_integral_floats_are_integers_as_in_jsonschema():
    protocol.validate("GenerateRequest", {**GOOD, "prompt_token_ids": [1.0, 2], "max_tokens": 3.0})


def _mutations(rng: random.Random):
    weird = [None, True, False, -1, 0, 1, 1.0, 1.5, 2**32, 2**32 - 1, -0.0, 1e300, "", "x", [], {}, [1], {"a": 1}]
    for _ in range(400):
        m = copy.deepcopy(GOOD)
        for _ in range(rng.randint(1, 3)):
            target = rng.choice(["prompt_token_ids", "max_tokens", "request_id", "sampling", "stop_token_ids", "new"])
            if target == "prompt_token_ids" and rng.random() < 0.7:
                m["prompt_token_ids"] = [rng.choice(weird + list(range(5))) for _ in range(rng.randint(0, 6))]
            elif target == "sampling":
                m["sampling"] = {rng.choice(["temperature", "top_p", "top_k", "seed", "bad"]): rng.choice(weird)}
            elif target == "new":
                m[rng.choice(["prompt", "n"])] = rng.choice(weird)
            else:
                m[target] = rng.choice(weird)
        yield m


def test_fast_validator_agrees_with_plain_jsonschema():
    rng = random.Random(1234)
    plain = protocol._plain_validator("GenerateRequest")
    seen = {True: 0, False: 0}
    for m in _mutations(rng):
        fast_err = protocol.first_error("GenerateRequest", m)
        plain_errs = list(plain.iter_errors(m))
        assert (fast_err is None) == (not plain_errs), m
        seen[fast_err is None] += 1
        if fast_err is not None:
            # same set of failures, and the first one reported at the same place
            fast_all = sorted(protocol.error_param(e) or "" for e in protocol._validator("GenerateRequest").iter_errors(m))
            assert fast_all == sorted(protocol.error_param(e) or "" for e in plain_errs), m
    assert seen[True] > 5 and seen[False] > 200  # the corpus exercises both sides


def test_long_prompts_validate_and_report_the_bad_index():
    m = {**GOOD, "prompt_token_ids": list(range(200_000))}
    protocol.validate("GenerateRequest", m)
    m["prompt_token_ids"][150_000] = -5
    with pytest.raises(ProtocolError) as e:
        protocol.validate("GenerateRequest", m)
    assert e.value.param == "prompt_token_ids[150000]"
    m["prompt_token_ids"] = list(range(1_048_577))
    with pytest.raises(ProtocolError) as e:
        protocol.validate("GenerateRequest", m)
    assert e.value.param == "prompt_token_ids" and len(e.value.message) < 400  # not the array quoted whole


@pytest.mark.parametrize("raw, says", [
    (b"\xff\xfe{}", "UTF-8"),
    (b'{"a": "\xc3\x28"}', "UTF-8"),
    (b"{", "not valid JSON"),
    (b"", "not valid JSON"),
    (b'{"a": NaN}', "not valid JSON"),
    (b'{"a": Infinity}', "not valid JSON"),
    (b'{"a": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_parse_json_body_rejects(raw, says):
    with pytest.raises(ProtocolError) as e:
        protocol.parse_json_body(raw)
    assert says in e.value.message and e.value.status == 400


def test_parse_json_body_accepts_utf8_and_json():
    assert protocol.parse_json_body('{"m": "é✓"}'.encode()) == {"m": "é✓"}
    assert protocol.parse_json_body(json.dumps(GOOD).encode()) == GOOD
