"""Certificates and duplicate-vote evidence: verifiable with only the validator set."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from depin_p2p import wire
from depin_p2p.consensus.state import (
    GENESIS_PREV_HASH,
    Candidate,
    Certificate,
    CommitSig,
    DuplicateVoteEvidence,
    Precommit,
    Prevote,
    ValidatorSet,
    certificate_hash,
    make_evidence,
    value_id_of,
    verify_certificate,
    verify_evidence,
)
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import Reject
from depin_p2p.model import Validator

NET = "cert-net"
KEYS = [KeyPair.from_seed(hashlib.blake2b(b"cert%d" % i, digest_size=32).digest()) for i in range(4)]
VALS = ValidatorSet.of([Validator(k.public_key, 1) for k in KEYS])
OUTSIDER = KeyPair.from_seed(b"\x42" * 32)


def certificate(signers: list[KeyPair], epoch: int = 1, prev: bytes = GENESIS_PREV_HASH) -> Certificate:
    cand = Candidate(epoch, prev, b"value %d" % epoch)
    vid = value_id_of(cand)
    envs = [wire.seal(Precommit(epoch, 2, vid), k, NET) for k in signers]
    sigs = sorted((CommitSig(e.signer, e.signature) for e in envs), key=lambda s: s.validator)
    return Certificate(cand, 2, tuple(sigs))


def test_a_quorum_certificate_verifies_and_chains() -> None:
    first = certificate(KEYS[:3])
    verify_certificate(first, VALS, NET, GENESIS_PREV_HASH)
    second = certificate(KEYS[1:], epoch=2, prev=certificate_hash(first))
    verify_certificate(second, VALS, NET, certificate_hash(first))
    # The hash names what was decided, not which signatures a node happened to hold.
    assert certificate_hash(certificate(KEYS[1:])) == certificate_hash(first)


@pytest.mark.parametrize(
    ("cert", "prev", "code"),
    [
        (certificate(KEYS[:2]), GENESIS_PREV_HASH, "insufficient_power"),
        (certificate(KEYS[:3]), b"\x01" * 32, "wrong_prev_cert"),
        (certificate([*KEYS[:2], OUTSIDER]), GENESIS_PREV_HASH, "unknown_validator"),
        (
            dataclasses.replace(
                certificate(KEYS[:3]), signatures=tuple(reversed(certificate(KEYS[:3]).signatures))
            ),
            GENESIS_PREV_HASH,
            "unsorted_signatures",
        ),
        (
            dataclasses.replace(certificate(KEYS[:3]), round=3),  # signatures were for round 2
            GENESIS_PREV_HASH,
            "bad_signature",
        ),
        (
            dataclasses.replace(
                certificate(KEYS[:3]),
                signatures=(*certificate(KEYS[:2]).signatures, certificate(KEYS[:2]).signatures[0]),
            ),
            GENESIS_PREV_HASH,
            "unsorted_signatures",
        ),
    ],
)
def test_bad_certificates_are_rejected_with_a_code(cert: Certificate, prev: bytes, code: str) -> None:
    with pytest.raises(Reject) as info:
        verify_certificate(cert, VALS, NET, prev)
    assert info.value.code == code


def test_a_certificate_from_another_network_does_not_verify() -> None:
    with pytest.raises(Reject, match="bad_signature"):
        verify_certificate(certificate(KEYS[:3]), VALS, "another-net", GENESIS_PREV_HASH)


def _votes(key: KeyPair, a: bytes | None, b: bytes | None) -> tuple[wire.Envelope, wire.Envelope]:
    return wire.seal(Prevote(3, 1, a), key, NET), wire.seal(Prevote(3, 1, b), key, NET)


def test_duplicate_vote_evidence_convicts_its_signer() -> None:
    a, b = _votes(KEYS[2], None, b"\x01" * 32)
    ev = make_evidence(b, a)
    assert ev == make_evidence(a, b)  # canonical order
    assert verify_evidence(ev, VALS, NET) == KEYS[2].public_key
    assert wire.decode(wire.encode(ev)) == ev


def test_evidence_codes() -> None:
    a, b = _votes(KEYS[2], None, b"\x01" * 32)
    ev = make_evidence(a, b)
    with pytest.raises(Reject, match="not_canonical"):
        verify_evidence(DuplicateVoteEvidence(ev.vote_b, ev.vote_a), VALS, NET)
    same = wire.seal(Prevote(3, 1, None), KEYS[2], NET)
    with pytest.raises(Reject, match="not_canonical"):
        verify_evidence(DuplicateVoteEvidence(same, same), VALS, NET)
    other = wire.seal(Prevote(3, 1, b"\x05" * 32), KEYS[1], NET)
    with pytest.raises(Reject, match="different_signers"):
        verify_evidence(make_evidence(a, other), VALS, NET)
    later = wire.seal(Prevote(3, 2, b"\x01" * 32), KEYS[2], NET)
    with pytest.raises(Reject, match="not_conflicting"):
        verify_evidence(make_evidence(a, later), VALS, NET)
    kinds = wire.seal(Precommit(3, 1, b"\x01" * 32), KEYS[2], NET)
    with pytest.raises(Reject, match="not_conflicting"):
        verify_evidence(make_evidence(a, kinds), VALS, NET)
    oa, ob = _votes(OUTSIDER, None, b"\x01" * 32)
    with pytest.raises(Reject, match="unknown_validator"):
        verify_evidence(make_evidence(oa, ob), VALS, NET)
    forged = wire.Envelope(NET, b.signer, a.signature, b.body)
    with pytest.raises(Reject, match="bad_signature"):
        verify_evidence(make_evidence(a, forged), VALS, NET)
