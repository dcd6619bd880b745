"""A seeded world for simulated devices: who hears which beacon, how fast who computes. [pure]

Positions come from the registry (each device's H3 cell). A beacon reaches a
radio device with

    rssi = tx power + beaconer gain + witness gain - FSPL(d, f) - shadowing

in integer centi-dB, with FSPL from :mod:`depin_p2p.witness.radio` and
shadowing a non-negative extra loss: a static per-link part (buildings,
terrain) plus a per-beacon fading part, each a sum of four hash-derived
uniforms (Irwin-Hall, bell-shaped). Shadowing only ever adds loss, so an
honest simulated witness always satisfies the validators' free-space bound;
the device hears the beacon when rssi is at least the sensitivity.

Every draw is ``BLAKE2b-256(seed ‖ label ‖ inputs)`` read as a big-endian
integer, so a run is reproducible from the seed alone, on any machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from depin_p2p.model import Device, DeviceKind
from depin_p2p.witness import radio

_MAX_HEARING_MM: Final = 200_000_000  # nothing is heard beyond 200 km


@dataclass(frozen=True, slots=True)
class WorldParams:
    """Physics and hardware knobs of the simulated world."""

    sensitivity_cdbm: int = -13_500  # -135 dBm: LoRa at a slow spreading factor
    noise_floor_cdbm: int = -11_700  # -174 dBm/Hz + 10·log10(125 kHz) + 6 dB noise figure
    link_shadowing_max_cdb: int = 2_400  # static per-link extra loss, 0..24 dB
    fading_max_cdb: int = 800  # per-beacon extra loss, 0..8 dB
    max_frequency_error_hz: int = 20_000  # receivers' crystal error
    min_delay_ms: int = 50  # beacon to report delay
    max_delay_ms: int = 2_000
    min_ops_per_ms: int = 200_000  # multiply-adds per millisecond
    max_ops_per_ms: int = 5_000_000


@dataclass(frozen=True, slots=True)
class Heard:
    """What one device receives of one beacon."""

    witness: bytes
    rssi_cdbm: int
    snr_cdb: int
    frequency_hz: int
    received_at_ms: int


class World:
    """The seeded world over a fixed set of devices (read-only after construction)."""

    __slots__ = ("_radios", "params", "seed")

    def __init__(self, seed: bytes, devices: Iterable[Device], params: WorldParams | None = None) -> None:
        """Args: seed (any bytes), the registered devices, the physics knobs."""
        self.seed = bytes(seed)
        self.params = params or WorldParams()
        self._radios = tuple(
            sorted((d for d in devices if d.kind is DeviceKind.RADIO), key=lambda d: d.device_id)
        )

    def draw(self, label: bytes, *parts: bytes, bound: int) -> int:
        """A uniform-ish integer in [0, bound) from the seed, a label and inputs."""
        h = hashlib.blake2b(digest_size=32)
        h.update(self.seed)
        h.update(label)
        for part in parts:
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
        return int.from_bytes(h.digest(), "big") % bound if bound > 0 else 0

    def _bell(self, label: bytes, parts: tuple[bytes, ...], maximum: int) -> int:
        quarter = maximum // 4 + 1
        return sum(self.draw(label + bytes([i]), *parts, bound=quarter) for i in range(4))

    def shadowing_cdb(self, beaconer: bytes, witness: bytes, beacon_id: bytes) -> int:
        """Extra loss (centi-dB, ≥ 0) on the link for one beacon."""
        link = self._bell(
            b"link", (min(beaconer, witness), max(beaconer, witness)), self.params.link_shadowing_max_cdb
        )
        fade = self._bell(b"fade", (beacon_id, witness), self.params.fading_max_cdb)
        return link + fade

    def hear(self, beacon: radio.Beacon, beacon_id: bytes, witness: Device) -> Heard | None:
        """What ``witness`` receives of ``beacon`` (None: not heard, or not a radio)."""
        if witness.kind is not DeviceKind.RADIO or witness.device_id == beacon.device:
            return None
        d_mm = radio.distance_mm(radio.cell_geo(beacon.location), radio.cell_geo(witness.location))
        if d_mm is None or d_mm > _MAX_HEARING_MM:
            return None
        fspl = radio.fspl_cdb(d_mm, beacon.frequency_hz)
        shadow = self.shadowing_cdb(beacon.device, witness.device_id, beacon_id)
        rssi = beacon.tx_power_cdbm + beacon.gain_cdbi + witness.gain_cdbi - fspl - shadow
        if rssi < self.params.sensitivity_cdbm:
            return None
        p = self.params
        offset = self.draw(b"freq", beacon_id, witness.device_id, bound=2 * p.max_frequency_error_hz + 1)
        delay = self.draw(b"delay", beacon_id, witness.device_id, bound=p.max_delay_ms - p.min_delay_ms + 1)
        return Heard(
            witness=witness.device_id,
            rssi_cdbm=rssi,
            snr_cdb=rssi - p.noise_floor_cdbm,
            frequency_hz=beacon.frequency_hz + offset - p.max_frequency_error_hz,
            received_at_ms=beacon.sent_at_ms + p.min_delay_ms + delay,
        )

    def hearing(self, beacon: radio.Beacon, beacon_id: bytes) -> tuple[Heard, ...]:
        """Every radio device that hears ``beacon``, sorted by device id."""
        heard = (self.hear(beacon, beacon_id, d) for d in self._radios)
        return tuple(h for h in heard if h is not None)

    def ops_per_ms(self, device_id: bytes) -> int:
        """A compute device's speed in multiply-adds per millisecond (fixed per device)."""
        p = self.params
        return p.min_ops_per_ms + self.draw(
            b"speed", device_id, bound=p.max_ops_per_ms - p.min_ops_per_ms + 1
        )

    def compute_ms(self, device_id: bytes, n: int) -> int:
        """Milliseconds the device needs for an n x n matrix product (n³ multiply-adds), at least 1."""
        return max(1, -(-(n**3) // self.ops_per_ms(device_id)))
