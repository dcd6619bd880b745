"""A local devnet's keys, genesis and node homes, from a seed.

Everything is derived from ``seed`` (keys by BLAKE2b of seed and label), so
the same seed gives the same network: the in-process simulator relies on it,
and a tester can recreate a devnet exactly.

Placement: radio devices sit on a square grid of ``spacing_m`` (1.5 km by
default) around ``centre``, so neighbours hear each other inside every
witness rule (more than 8 resolution-11 cells apart, less than 100 km, under
the path-loss bound); each node owns its share of them. Every node also owns
one compute provider. Validators' radio devices double as compute witnesses.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import h3

from depin_p2p.crypto import KeyPair, write_key_file
from depin_p2p.model import MICRO

DEFAULT_CENTRE = (37.7749, -122.4194)
RADIO_FREQUENCY_HZ = 915_000_000
RADIO_TX_POWER_CDBM = 2_700  # 27 dBm
RADIO_GAIN_CDBI = 300  # 3 dBi
COMPUTE_CAPACITY = 64


@dataclass(frozen=True, slots=True)
class DevnetPlan:
    """What to generate."""

    nodes: int = 4
    validators: int | None = None  # None: every node validates
    radios_per_node: int = 3
    epoch_seconds: float = 10.0
    emission_per_epoch: int = 1_000 * MICRO
    balance: int = 100_000 * MICRO
    stake: int = 10_000 * MICRO
    spacing_m: int = 1_500
    centre: tuple[float, float] = DEFAULT_CENTRE
    seed: bytes = b"depin-devnet"
    network_id: str | None = None  # None: derived from the seed

    def validator_count(self) -> int:
        return self.nodes if self.validators is None else self.validators


@dataclass(frozen=True, slots=True)
class DeviceKeys:
    key: KeyPair
    kind: str  # "radio" | "compute"
    owner_index: int
    location: int  # H3 cell, resolution 12 (0 for compute)


@dataclass(frozen=True, slots=True)
class Devnet:
    plan: DevnetPlan
    network_id: str
    node_keys: tuple[KeyPair, ...]
    devices: tuple[DeviceKeys, ...]
    genesis: dict[str, object]

    def devices_of(self, node: int) -> tuple[DeviceKeys, ...]:
        return tuple(d for d in self.devices if d.owner_index == node)


def derive_key(seed: bytes, label: str) -> KeyPair:
    return KeyPair.from_seed(hashlib.blake2b(seed + b"/" + label.encode(), digest_size=32).digest())


def grid_cells(count: int, centre: tuple[float, float], spacing_m: int) -> list[int]:
    """``count`` resolution-12 cells on a square grid of ``spacing_m`` around ``centre``."""
    side = max(1, math.ceil(math.sqrt(count)))
    lat0, lng0 = centre
    dlat = spacing_m / 111_320
    dlng = spacing_m / (111_320 * math.cos(math.radians(lat0)))
    cells = []
    for i in range(count):
        row, col = divmod(i, side)
        lat = lat0 + (row - (side - 1) / 2) * dlat
        lng = lng0 + (col - (side - 1) / 2) * dlng
        cells.append(int(h3.latlng_to_cell(lat, lng, 12), 16))
    return cells


def plan_devnet(plan: DevnetPlan, *, genesis_time_ms: int) -> Devnet:
    """Derive keys, devices and the genesis document of a devnet (no files written)."""
    if plan.nodes < 1:
        raise ValueError("a devnet needs at least one node")
    if not 1 <= plan.validator_count() <= plan.nodes:
        raise ValueError("validators must be between 1 and the number of nodes")
    network_id = plan.network_id or "devnet-" + hashlib.blake2b(plan.seed, digest_size=4).hexdigest()
    nodes = tuple(derive_key(plan.seed, f"node-{i}") for i in range(plan.nodes))
    cells = grid_cells(plan.nodes * plan.radios_per_node, plan.centre, plan.spacing_m)
    devices: list[DeviceKeys] = []
    for i, cell in enumerate(cells):
        devices.append(DeviceKeys(derive_key(plan.seed, f"radio-{i}"), "radio", i % plan.nodes, cell))
    for n in range(plan.nodes):
        devices.append(DeviceKeys(derive_key(plan.seed, f"compute-{n}"), "compute", n, 0))
    genesis: dict[str, object] = {
        "network_id": network_id,
        "genesis_time_ms": genesis_time_ms,
        "epoch_length_ms": int(plan.epoch_seconds * 1000),
        "emission_per_epoch": plan.emission_per_epoch,
        "accounts": {k.address: plan.balance for k in nodes},
        "validators": [{"address": k.address, "stake": plan.stake} for k in nodes[: plan.validator_count()]],
        "devices": [device_entry(d, nodes) for d in devices],
    }
    return Devnet(plan, network_id, nodes, tuple(devices), genesis)


def device_entry(d: DeviceKeys, nodes: tuple[KeyPair, ...]) -> dict[str, object]:
    radio = d.kind == "radio"
    return {
        "device_id": d.key.address,
        "owner": nodes[d.owner_index].address,
        "kind": d.kind,
        "location": format(d.location, "x"),
        "frequency_hz": RADIO_FREQUENCY_HZ if radio else 0,
        "tx_power_cdbm": RADIO_TX_POWER_CDBM if radio else 0,
        "gain_cdbi": RADIO_GAIN_CDBI if radio else 0,
        "capacity": 0 if radio else COMPUTE_CAPACITY,
    }


def write_genesis(devnet: Devnet, path: Path) -> None:
    path.write_text(json.dumps(devnet.genesis, indent=2, sort_keys=True) + "\n")


def write_device_keys(devnet: Devnet, node: int, directory: Path) -> list[Path]:
    """Write node ``node``'s device keys (mode 0600) under ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for d in devnet.devices_of(node):
        path = directory / f"{d.kind}-{d.key.address[:12]}.key"
        write_key_file(path, d.key, force=True)
        paths.append(path)
    return paths
