"""Pinned signing bytes and signatures: a wire change cannot slip through unnoticed."""

from __future__ import annotations

import json
from pathlib import Path

from nacl.signing import VerifyKey

from depin_p2p import wire
from tests.vectors import signing

PINNED = json.loads((Path(__file__).parent / "signing.json").read_text())


def test_every_domain_has_a_vector() -> None:
    assert {c["domain"] for c in PINNED["cases"]} == {d.value for d in wire.Domain}


def test_vectors_match_this_implementation() -> None:
    assert signing.compute() == PINNED


def test_vectors_verify_with_plain_pynacl() -> None:
    # What another implementation would do: no depin_p2p code in the check.
    vk = VerifyKey(bytes.fromhex(PINNED["public_key"]))
    for case in PINNED["cases"]:
        vk.verify(bytes.fromhex(case["signing_bytes"]), bytes.fromhex(case["signature"]))
