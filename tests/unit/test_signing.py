"""Domain-separated signatures: each way of getting it wrong has its own code."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from depin_p2p import wire
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import Reject

NET = "devnet-a"


@wire.message(type_id=201, domain=wire.Domain.PREVOTE)
@dataclass(frozen=True, slots=True)
class FakePrevote:
    epoch: wire.U64
    value: bytes


@wire.message(type_id=202, domain=wire.Domain.PRECOMMIT)
@dataclass(frozen=True, slots=True)
class FakePrecommit:
    epoch: wire.U64
    value: bytes


KEY = KeyPair.from_seed(bytes(range(32)))
OTHER = KeyPair.from_seed(bytes(range(1, 33)))


def _sealed() -> wire.Envelope:
    return wire.seal(FakePrevote(3, b"v"), KEY, NET)


def test_valid_envelope_opens() -> None:
    env = wire.decode_as(wire.encode(_sealed()), wire.Envelope)
    verified = wire.open_envelope(env, network_id=NET, domain=wire.Domain.PREVOTE, signer=KEY.public_key)
    assert verified.message == FakePrevote(3, b"v")
    assert verified.signer == KEY.public_key


def _code(
    env: wire.Envelope, *, domain: wire.Domain = wire.Domain.PREVOTE, signer: bytes | None = None
) -> str:
    with pytest.raises(Reject) as info:
        wire.open_envelope(env, network_id=NET, domain=domain, signer=signer)
    return info.value.code


def test_tampered_body_is_bad_signature() -> None:
    env = _sealed()
    tampered = dataclasses.replace(env, body=wire.encode(FakePrevote(4, b"v")))
    assert _code(tampered) == "bad_signature"


def test_other_network_is_wrong_network() -> None:
    env = wire.seal(FakePrevote(3, b"v"), KEY, "devnet-b")
    assert _code(env) == "wrong_network"


def test_relabelled_network_still_fails_the_signature() -> None:
    env = dataclasses.replace(wire.seal(FakePrevote(3, b"v"), KEY, "devnet-b"), network_id=NET)
    assert _code(env) == "bad_signature"


def test_other_domain_is_wrong_domain() -> None:
    env = wire.seal(FakePrecommit(3, b"v"), KEY, NET)
    assert _code(env, domain=wire.Domain.PREVOTE) == "wrong_domain"


def test_signature_for_one_domain_never_verifies_in_another() -> None:
    # Same body layout, different type: moving a prevote signature onto a precommit fails.
    prevote = _sealed()
    forged = dataclasses.replace(prevote, body=wire.encode(FakePrecommit(3, b"v")))
    assert _code(forged, domain=wire.Domain.PRECOMMIT) == "bad_signature"


def test_wrong_key_is_wrong_signer() -> None:
    assert _code(_sealed(), signer=OTHER.public_key) == "wrong_signer"


def test_signature_of_another_key_is_bad_signature() -> None:
    env = dataclasses.replace(_sealed(), signer=OTHER.public_key)
    assert _code(env) == "bad_signature"


def test_undecodable_body_is_malformed() -> None:
    env = dataclasses.replace(_sealed(), body=b"\xc1")
    assert _code(env) == "malformed"


def test_signing_bytes_are_length_prefixed() -> None:
    # "ab" + "c" must not collide with "a" + "bc".
    one = wire.signing_bytes("ab", wire.Domain.TX, 1, b"c")
    two = wire.signing_bytes("a", wire.Domain.TX, 1, b"bc")
    assert one != two
    assert one.startswith(b"\x00\x00\x00\x02ab\x00\x00\x00\x02tx\x00\x01\x00\x00\x00\x01c")
