"""Gossip-level validation: one test per rule, each code checked."""

from __future__ import annotations

import dataclasses

import pytest

from depin_p2p import wire
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import Ignore, Reject
from depin_p2p.gossip.validation import GossipRule, validate_gossip_envelope
from tests.unit.gossip.messages import NETWORK, RULES, WINDOW, FakeProof, forged_proof, signed_proof

KEY = KeyPair.from_seed(b"k" * 32)
NOW = 1_700_000_000_000


def check(data: bytes, now_ms: int = NOW, **kw: object) -> wire.Verified:
    return validate_gossip_envelope(data, network_id=NETWORK, rules=RULES, now_ms=now_ms, **kw)  # type: ignore[arg-type]


def test_accepts_a_good_proof() -> None:
    verified = check(signed_proof(KEY, NOW, b"hello"))
    assert verified.message == FakeProof(KEY.public_key, NOW, b"hello")
    assert verified.signer == KEY.public_key


@pytest.mark.parametrize(
    ("data", "kwargs", "error", "code"),
    [
        (signed_proof(KEY, NOW, b"x" * 300), {"max_size": 200}, Reject, "oversized"),
        (b"\x93\x01\x01", {}, Reject, "malformed"),
        (wire.encode(FakeProof(KEY.public_key, NOW, b"bare")), {}, Reject, "malformed"),
        (signed_proof(KEY, NOW, b"x", network="other"), {}, Reject, "wrong_network"),
        (forged_proof(KEY, NOW, b"x"), {}, Reject, "bad_signature"),
        (signed_proof(KEY, NOW - 600_001, b"x"), {}, Ignore, "too_old"),
        (signed_proof(KEY, NOW + 30_001, b"x"), {}, Ignore, "too_early"),
    ],
)
def test_each_rule(data: bytes, kwargs: dict[str, object], error: type[Exception], code: str) -> None:
    with pytest.raises(error) as info:
        check(data, **kwargs)
    assert info.value.code == code  # type: ignore[attr-defined]


def test_window_edges_are_inclusive() -> None:
    check(signed_proof(KEY, NOW - 600_000, b"x"))
    check(signed_proof(KEY, NOW + 30_000, b"x"))


def test_unexpected_type_and_wrong_domain() -> None:
    env = wire.decode_as(signed_proof(KEY, NOW, b"x"), wire.Envelope)
    with pytest.raises(Reject) as info:
        validate_gossip_envelope(wire.encode(env), network_id=NETWORK, rules={}, now_ms=NOW)
    assert info.value.code == "unexpected_type"
    with pytest.raises(Reject) as info:
        validate_gossip_envelope(
            wire.encode(env), network_id=NETWORK, rules={240: GossipRule(wire.Domain.TX)}, now_ms=NOW
        )
    assert info.value.code == "wrong_domain"


def test_far_outside_the_window_and_the_callers_screen_come_before_the_signature() -> None:
    far = {240: GossipRule(wire.Domain.BEACON, dataclasses.replace(WINDOW, far_ms=60_000))}
    for at, code in ((NOW - 600_001, "too_old"), (NOW - 660_001, "far_too_old"),
                     (NOW + 90_001, "far_out_of_window"), (NOW + 90_000, "too_early")):
        with pytest.raises(Ignore) as info:
            validate_gossip_envelope(forged_proof(KEY, at, b"x"), network_id=NETWORK, rules=far, now_ms=NOW)
        assert info.value.code == code  # a forged signature: never reached

    screened: list[tuple[object, bytes]] = []

    def screen(msg: object, signer: bytes) -> None:
        screened.append((msg, signer))
        raise Reject("unknown_device")

    with pytest.raises(Reject) as info:
        check(forged_proof(KEY, NOW, b"x"), screen=screen)
    assert info.value.code == "unknown_device"  # not bad_signature: the screen ran first
    assert screened == [(FakeProof(KEY.public_key, NOW, b"x!"), KEY.public_key)]
