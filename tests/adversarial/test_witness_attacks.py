"""Attacks on the witness core (radio lottery, compute assignment and rewards), each with its defence.

Ported from the security review's reproductions (findings 04-07): each test
fails on the code before the fix and passes with it.
"""

from __future__ import annotations

import pytest

from depin_p2p.errors import Reject
from depin_p2p.witness import radio
from tests.unit.witness import support as s

# ------------------------------------------------- F06: same-owner witness ring

RING_OWNER = s.key("adv-ring-owner").public_key
RING_BEACONER = s.key("adv-ring-beaconer")
RING_MEMBER = s.key("adv-ring-member")
RING_B_DEV = s.radio_device(RING_BEACONER, s.cell(s.SF_LAT, s.SF_LNG), owner=RING_OWNER)
RING_W_DEV = s.radio_device(RING_MEMBER, s.cell(s.SF_LAT + 0.018, s.SF_LNG), owner=RING_OWNER)  # ~2 km


def test_an_owner_cannot_witness_its_own_beacon_through_another_device() -> None:
    """Defence: a witness device owned by the beaconer's owner is rejected [same_owner].

    Registration is free and the emission fixed, so otherwise one account's
    ring of devices mints beaconer and witness shares out of everyone's pool.
    """
    registry = s.DictRegistry([RING_B_DEV, RING_W_DEV])
    b_env = s.make_beacon(RING_BEACONER, RING_B_DEV)
    checked = radio.validate_beacon(b_env, registry=registry, network_id=s.NETWORK)
    report = s.make_report(RING_MEMBER, b_env, rssi=-11_000)
    with pytest.raises(Reject) as exc:
        radio.validate_witness_report(checked, report, registry=registry, network_id=s.NETWORK)
    assert exc.value.code == "same_owner"
    # The same geometry under another owner is a valid witness: the owner is what is refused.
    other = s.radio_device(RING_MEMBER, RING_W_DEV.location)
    registry = s.DictRegistry([RING_B_DEV, other])
    radio.validate_witness_report(checked, report, registry=registry, network_id=s.NETWORK)
