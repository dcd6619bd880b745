"""Shared test helpers for the witness core: keys, devices, a dict-backed registry."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import h3.api.basic_int as h3

from depin_p2p import wire
from depin_p2p.crypto import KeyPair
from depin_p2p.model import Device, DeviceKind
from depin_p2p.witness import radio

NETWORK = "depin-witness-test"
FREQ = 915_000_000
TX = 2_700  # 27 dBm
GAIN = 300  # 3 dBi
SF_LAT, SF_LNG = 37.77, -122.41  # the beaconer's neighbourhood


def key(label: str) -> KeyPair:
    return KeyPair.from_seed(hashlib.blake2b(label.encode(), digest_size=32).digest())


class DictRegistry:
    """The DeviceRegistry protocol over a dict (the ledger implements it for real)."""

    def __init__(self, devices: Iterable[Device] = ()) -> None:
        self.devices = {d.device_id: d for d in devices}

    def add(self, device: Device) -> Device:
        self.devices[device.device_id] = device
        return device

    def get_device(self, device_id: bytes) -> Device | None:
        return self.devices.get(device_id)


def cell(lat: float, lng: float) -> int:
    return int(h3.latlng_to_cell(lat, lng, 12))


def radio_device(
    k: KeyPair, cell12: int, *, owner: bytes | None = None, freq: int = FREQ, tx: int = TX, gain: int = GAIN
) -> Device:
    return Device(
        device_id=k.public_key,
        owner=owner if owner is not None else key("owner:" + k.public_key.hex()).public_key,
        kind=DeviceKind.RADIO,
        location=cell12,
        frequency_hz=freq,
        tx_power_cdbm=tx,
        gain_cdbi=gain,
        capacity=0,
        registered_epoch=0,
    )


def compute_device(k: KeyPair, *, owner: bytes, capacity: int = 1) -> Device:
    return Device(k.public_key, owner, DeviceKind.COMPUTE, 0, 0, 0, 0, capacity, 0)


def make_beacon(
    k: KeyPair, device: Device, *, sent_at_ms: int = 1_000_000, nonce: int = 7, network: str = NETWORK
) -> wire.Envelope:
    b = radio.Beacon(
        device=k.public_key,
        epoch=3,
        nonce=nonce,
        location=device.location,
        frequency_hz=device.frequency_hz,
        tx_power_cdbm=device.tx_power_cdbm,
        gain_cdbi=device.gain_cdbi,
        sent_at_ms=sent_at_ms,
    )
    return wire.seal(b, k, network)


def make_report(
    k: KeyPair,
    beacon_env: wire.Envelope,
    *,
    rssi: int = -9_000,
    snr: int = 500,
    freq: int = FREQ,
    received_at_ms: int = 1_000_500,
    network: str = NETWORK,
) -> wire.Envelope:
    rep = radio.WitnessReport(
        witness=k.public_key,
        beacon_id=radio.beacon_id(beacon_env),
        rssi_cdbm=rssi,
        snr_cdb=snr,
        frequency_hz=freq,
        received_at_ms=received_at_ms,
    )
    return wire.seal(rep, k, network)


def cell_at_grid_distance(origin12: int, cells11: int) -> int:
    """A res-12 cell whose res-11 parent is exactly ``cells11`` steps from origin's parent."""
    parent = h3.cell_to_parent(origin12, 11)
    ring = sorted(h3.grid_ring(parent, cells11))
    return int(h3.cell_to_center_child(ring[0], 12))


def cell_at_distance_m(origin12: int, metres: int) -> int:
    """A res-12 cell whose integer distance (floored metres) from origin is exactly ``metres``."""
    o = radio.cell_geo(origin12)
    lat, lng = h3.cell_to_latlng(origin12)
    # Due north: one degree of latitude is ~111.195 km on the model sphere.
    guess = h3.latlng_to_cell(lat + metres / 111_195.0, lng, 12)
    for c in sorted(h3.grid_disk(guess, 12)):
        d = radio.distance_mm(o, radio.cell_geo(c))
        if d is not None and d // 1000 == metres:
            return int(c)
    raise AssertionError(f"no res-12 cell at exactly {metres} m found")
