"""Pinned consensus vectors: a change to rotation, ids or vote bytes cannot slip through unnoticed."""

from __future__ import annotations

import json
from pathlib import Path

from nacl.signing import VerifyKey

from depin_p2p import wire
from depin_p2p.consensus.state import Certificate, ValidatorSet, verify_certificate
from depin_p2p.model import Validator
from tests.vectors import consensus_vectors

PINNED = json.loads((Path(__file__).parent / "consensus_vectors.json").read_text())


def test_vectors_match_this_implementation() -> None:
    assert consensus_vectors.compute() == PINNED


def test_the_pinned_certificate_verifies_with_plain_pynacl_and_with_ours() -> None:
    cert = wire.decode_as(bytes.fromhex(PINNED["certificate"]), Certificate)
    data = bytes.fromhex(PINNED["precommit_signing_bytes"])
    for sig in cert.signatures:
        VerifyKey(sig.validator).verify(data, sig.signature)
    members = [Validator(bytes.fromhex(v["public_key"]), v["power"]) for v in PINNED["validators"]]
    vals = ValidatorSet.of(members)
    verify_certificate(cert, vals, PINNED["network_id"], bytes(32))


def test_rotation_uses_more_than_one_proposer() -> None:
    assert len({p["proposer"] for p in PINNED["proposers"]}) > 1
