"""The shared vectors (shared/vectors/) checked from Python: the edge's TypeScript suite checks the
same files, so both sides agree on the protocol schema and on block hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeserve_pod import protocol
from edgeserve_pod.block_hash import block_hashes

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
PROTOCOL_CASES = json.loads((VECTORS / "protocol" / "cases.json").read_text())["cases"]
HASH_CASES = json.loads((VECTORS / "block-hash.json").read_text())["cases"]


def test_vector_files_are_not_empty():
    assert len(PROTOCOL_CASES) >= 20
    assert any(c["valid"] for c in PROTOCOL_CASES) and any(not c["valid"] for c in PROTOCOL_CASES)
    assert len(HASH_CASES) >= 5


@pytest.mark.parametrize("case", PROTOCOL_CASES, ids=[f"{c['def']}:{c['name']}" for c in PROTOCOL_CASES])
def test_protocol_case(case):
    err = protocol.first_error(case["def"], case["message"])
    assert (err is None) == case["valid"], f"{case['name']}: validator says {err.message if err else 'valid'}"
    # The fast validator and plain jsonschema must agree on every vector too.
    plain = next(iter(protocol._plain_validator(case["def"]).iter_errors(case["message"])), None)
    assert (plain is None) == case["valid"]
    if err is not None:
        assert protocol.error_param(err) == protocol.error_param(plain)


@pytest.mark.parametrize("case", HASH_CASES, ids=[c["name"] for c in HASH_CASES])
def test_block_hash_case(case):
    assert block_hashes(case["model"], case["tokens"], case["block_size"]) == case["hashes"]
