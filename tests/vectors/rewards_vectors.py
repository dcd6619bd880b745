"""Reward vectors: the per-beacon share table and one whole epoch's payouts.

Regenerate (only on a deliberate rule change) with
``python -m tests.vectors.rewards_vectors > tests/vectors/rewards_table.json``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from depin_p2p.model import Device, DeviceKind
from depin_p2p.witness import rewards
from depin_p2p.witness.compute import challenge_size

PREV_CERT_HASH = hashlib.blake2b(b"vectors/prev-cert", digest_size=32).digest()
EMISSION = 12_345_678_901
EPOCH = 42


def _id(label: str) -> bytes:
    return hashlib.blake2b(label.encode(), digest_size=32).digest()


class _Registry:
    def __init__(self, devices: list[Device]) -> None:
        self._d = {d.device_id: d for d in devices}

    def get_device(self, device_id: bytes) -> Device | None:
        return self._d.get(device_id)


def epoch_inputs() -> tuple[list[Device], list[rewards.BeaconProof], list[rewards.ComputeProof]]:
    owners = [_id(f"owner-{i}") for i in range(5)]
    radios = [
        Device(_id(f"radio-{i}"), owners[i % 4], DeviceKind.RADIO, 0, 915_000_000, 2700, 300, 0, 0)
        for i in range(20)
    ]
    comps = [
        Device(_id(f"compute-{i}"), owners[4 - i], DeviceKind.COMPUTE, 0, 0, 0, 0, 8 << i, 0)
        for i in range(3)
    ]
    ids = [d.device_id for d in radios]
    beacons = [
        rewards.BeaconProof(_id("beacon-a"), ids[0], tuple(ids[1:6])),  # 5 witnesses
        rewards.BeaconProof(_id("beacon-b"), ids[1], tuple(ids[2:5])),  # 3 witnesses
        rewards.BeaconProof(_id("beacon-c"), ids[2], tuple(ids[3:20])),  # 17 valid, 14 rewarded
    ]
    n = [challenge_size(d.capacity) for d in comps]  # 8, 16, 32
    compute = [
        rewards.ComputeProof(comps[0].device_id, n[0], (_id("w1"), _id("w2"))),
        rewards.ComputeProof(comps[1].device_id, n[1], (_id("w1"), _id("w2"), _id("w3"))),
        rewards.ComputeProof(comps[2].device_id, n[2], (_id("w1"),)),  # below quorum
    ]
    return radios + comps, beacons, compute


def compute() -> dict[str, Any]:
    table = []
    for w in range(17):
        b, each = rewards.beacon_shares(w)
        table.append({"witnesses": w, "beaconer_units": b, "witness_units": each})
    devices, beacons, comp = epoch_inputs()
    payouts = rewards.compute_epoch_rewards(
        prev_cert_hash=PREV_CERT_HASH,
        epoch=EPOCH,
        emission=EMISSION,
        beacons=beacons,
        compute=comp,
        registry=_Registry(devices),
    )
    rewarded_c = rewards.select_rewarded_witnesses(
        PREV_CERT_HASH, EPOCH, beacons[2].beaconer, beacons[2].witnesses
    )
    return {
        "share_scale": rewards.SHARE_SCALE,
        "redundancy": rewards.REDUNDANCY,
        "decay": "4/5",
        "max_rewarded_witnesses": rewards.MAX_REWARDED_WITNESSES,
        "table": table,
        "epoch": {
            "prev_cert_hash": PREV_CERT_HASH.hex(),
            "number": EPOCH,
            "emission": EMISSION,
            "radio_pool_bps": rewards.DEFAULT_RADIO_POOL_BPS,
            "compute_quorum": rewards.DEFAULT_COMPUTE_QUORUM,
            "lottery_winners_beacon_c": [w.hex() for w in rewarded_c],
            "payouts": [[a.hex(), v] for a, v in payouts],
        },
    }


if __name__ == "__main__":
    print(json.dumps(compute(), indent=2))
