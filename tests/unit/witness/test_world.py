"""The seeded world: reproducible, and honest simulated witnesses pass validation."""

from __future__ import annotations

import hashlib

import pytest

from depin_p2p import wire
from depin_p2p.errors import Reject
from depin_p2p.witness import radio
from depin_p2p.witness.world import World, WorldParams
from tests.unit.witness import support as s


def scatter(count: int, label: str) -> list[tuple[s.KeyPair, object]]:
    """Devices at hash-derived spots within ~0.3 degrees of the beaconer."""
    out = []
    for i in range(count):
        h = hashlib.blake2b(f"{label}-{i}".encode(), digest_size=8).digest()
        dlat = (int.from_bytes(h[:4], "big") / 2**32 - 0.5) * 0.6
        dlng = (int.from_bytes(h[4:], "big") / 2**32 - 0.5) * 0.6
        k = s.key(f"{label}-{i}")
        out.append((k, s.radio_device(k, s.cell(s.SF_LAT + dlat, s.SF_LNG + dlng))))
    return out


BK = s.key("world-beaconer")
B_DEV = s.radio_device(BK, s.cell(s.SF_LAT, s.SF_LNG))
FLEET = scatter(150, "fleet")
# Two devices right next to the beaconer: they hear it but are too close to count.
NEIGHBOURS = [
    (s.key(f"nb-{i}"), s.radio_device(s.key(f"nb-{i}"), s.cell(s.SF_LAT + 0.0005 * i, s.SF_LNG)))
    for i in (1, 2)
]
DEVICES = [B_DEV, *(d for _, d in FLEET + NEIGHBOURS)]
KEYS = {d.device_id: k for k, d in FLEET + NEIGHBOURS}
REG = s.DictRegistry(DEVICES)


def test_same_seed_same_world_other_seed_other_world() -> None:
    env = s.make_beacon(BK, B_DEV)
    beacon, bid = wire.decode_as(env.body, radio.Beacon), radio.beacon_id(env)
    deaf = WorldParams(sensitivity_cdbm=-10_500)  # -105 dBm: only part of the fleet hears
    a = World(b"seed-1", DEVICES, deaf).hearing(beacon, bid)
    assert a == World(b"seed-1", list(reversed(DEVICES)), deaf).hearing(beacon, bid)
    assert a != World(b"seed-2", DEVICES, deaf).hearing(beacon, bid)
    assert 10 < len(a) < len(DEVICES) - 10


def test_honest_simulated_witnesses_fail_only_for_being_too_close() -> None:
    world = World(b"seed-1", DEVICES)
    verdicts: dict[str, int] = {}
    for nonce in range(3):
        env = s.make_beacon(BK, B_DEV, nonce=nonce)
        checked = radio.validate_beacon(env, registry=REG, network_id=s.NETWORK)
        for h in world.hearing(checked.beacon, checked.beacon_id):
            k = KEYS[h.witness]
            rep = s.make_report(
                k, env, rssi=h.rssi_cdbm, snr=h.snr_cdb, freq=h.frequency_hz, received_at_ms=h.received_at_ms
            )
            try:
                radio.validate_witness_report(checked, rep, registry=REG, network_id=s.NETWORK)
                verdicts["valid"] = verdicts.get("valid", 0) + 1
            except Reject as exc:
                verdicts[exc.code] = verdicts.get(exc.code, 0) + 1
    assert set(verdicts) == {"valid", "too_close"}
    assert verdicts["too_close"] == 6  # the two neighbours, for each of 3 beacons


def test_shadowing_is_extra_loss_within_its_bounds() -> None:
    p = WorldParams()
    world = World(b"x", DEVICES, p)
    values = [
        world.shadowing_cdb(B_DEV.device_id, d.device_id, bytes([i]) * 32) for i, d in enumerate(DEVICES)
    ]
    assert all(0 <= v <= p.link_shadowing_max_cdb + p.fading_max_cdb + 8 for v in values)
    assert len(set(values)) > len(values) // 2


@pytest.mark.parametrize("n", [8, 64, 256])
def test_compute_time_grows_with_n_cubed(n: int) -> None:
    world = World(b"x", DEVICES)
    dev = b"\x07" * 32
    speed = world.ops_per_ms(dev)
    assert WorldParams().min_ops_per_ms <= speed <= WorldParams().max_ops_per_ms
    assert world.compute_ms(dev, n) == max(1, -(-(n**3) // speed))
    assert world.compute_ms(dev, 2 * n) >= world.compute_ms(dev, n)
