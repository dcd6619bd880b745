"""Radio roles: a node's own radio devices lying in what they sign.

Each wraps the node's radio drivers (:class:`depin_p2p.witness.devices.RadioDriver`)
and re-signs what the honest driver produced, altered, with the device's own
key: the lie is the device's, exactly as a modified firmware would sign it.

- ``rssi-liar``: reports every beacon heard 30 dB louder than heard, above
  the free-space bound for the distance. Caught as ``rssi_above_fspl_bound``.
- ``beacon-replay``: from ``from_epoch`` on, sends its first beacon again
  each epoch (its nonce and send time, re-signed for the epoch) instead of a
  new one. Caught as ``ignored_too_old`` (its send time is outside the
  gossip window) or ``stale`` (reports outside its window).
- ``location-spoof-far``: its beacons claim a cell ~50 km north of the one
  it registered. Caught as ``beacon_mismatch``.
- ``self-witness-second-key``: for each beacon of one of its radios, signs a
  witness report with each of its other radios' keys. Caught as
  ``same_owner``.
- ``location-spoof-near``: its radios are registered at the cells touching
  another node's first radio (closer than ``MIN_CELL_DISTANCE`` res-11
  cells), and witness that radio's beacons all the same (an honest witness
  service sends no report the distance rule refuses). Caught as
  ``too_close``; its bundles are rejected whole and its peer banned.
- ``time-liar``: reports ``received_at`` a second before the beacon was
  sent (inside any gossip time window, outside the beacon's). Caught as
  ``stale``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import h3

from depin_p2p import wire
from depin_p2p.assemble import Devices
from depin_p2p.crypto import KeyPair
from depin_p2p.witness import radio
from depin_p2p.witness.devices import RadioDriver
from devnet.adversaries.base import Host, Role

Alter = Callable[[radio.WitnessReport, radio.Beacon], radio.WitnessReport]


class _LyingRadio:
    """An honest radio driver whose witness reports are altered and re-signed by the device."""

    def __init__(self, inner: RadioDriver, key: KeyPair, host: Host, role: Role, alter: Alter) -> None:
        self._inner, self._key, self._host, self._role, self._alter = inner, key, host, role, alter

    @property
    def device_id(self) -> bytes:
        return self._inner.device_id

    async def beacon(self, *, epoch: int, nonce: int) -> wire.Envelope:
        return await self._inner.beacon(epoch=epoch, nonce=nonce)

    async def witness(self, beacon_envelope: wire.Envelope) -> wire.Envelope | None:
        env = await self._inner.witness(beacon_envelope)
        if env is None or not self._role.active(self._host):
            return env
        report = wire.decode_as(env.body, radio.WitnessReport)
        self._host.attack.note("false_reports", self._host.clock.now_ms())
        beacon = wire.decode_as(beacon_envelope.body, radio.Beacon)
        return wire.seal(self._alter(report, beacon), self._key, self._host.network_id)


class _ReportLiar(Role):
    family = "radio"

    def alter(self, report: radio.WitnessReport, beacon: radio.Beacon) -> radio.WitnessReport:
        raise NotImplementedError

    def devices(self, host: Host, devices: Devices) -> Devices:
        radios = [_LyingRadio(r, devices.keys[r.device_id], host, self, self.alter) for r in devices.radios]
        return dataclasses.replace(devices, radios=radios)


class RssiLiar(_ReportLiar):
    name = "rssi-liar"
    summary = "reports rssi above the FSPL bound"
    codes = frozenset({"rssi_above_fspl_bound"})

    def alter(self, report: radio.WitnessReport, beacon: radio.Beacon) -> radio.WitnessReport:
        return dataclasses.replace(report, rssi_cdbm=report.rssi_cdbm + 3_000)


class TimeLiar(_ReportLiar):
    name = "time-liar"
    summary = "received_at outside the window"
    codes = frozenset({"stale"})

    def alter(self, report: radio.WitnessReport, beacon: radio.Beacon) -> radio.WitnessReport:
        return dataclasses.replace(report, received_at_ms=beacon.sent_at_ms - 1_000)


class _BeaconLiar(Role):
    """Wraps each radio's ``beacon``; ``lie`` returns the envelope sent instead of the honest one."""

    family = "radio"

    def lie(self, host: Host, key: KeyPair, honest: wire.Envelope) -> wire.Envelope | None:
        raise NotImplementedError

    def devices(self, host: Host, devices: Devices) -> Devices:
        radios = [_BeaconWrap(r, devices, host, self) for r in devices.radios]
        return dataclasses.replace(devices, radios=radios)


class _BeaconWrap:
    def __init__(self, inner: RadioDriver, devices: Devices, host: Host, role: _BeaconLiar) -> None:
        self._inner, self._devices, self._host, self._role = inner, devices, host, role
        self._key = devices.keys[inner.device_id]

    @property
    def device_id(self) -> bytes:
        return self._inner.device_id

    async def beacon(self, *, epoch: int, nonce: int) -> wire.Envelope:
        env = await self._inner.beacon(epoch=epoch, nonce=nonce)
        if not self._role.active(self._host):
            return env
        lie = self._role.lie(self._host, self._key, env)
        if lie is None:
            return env
        return lie

    async def witness(self, beacon_envelope: wire.Envelope) -> wire.Envelope | None:
        return await self._inner.witness(beacon_envelope)


class BeaconReplay(_BeaconLiar):
    name = "beacon-replay"
    summary = "re-sends an old beacon as new"
    codes = frozenset({"ignored_too_old", "stale"})

    def __init__(self) -> None:
        self._first: dict[bytes, wire.Envelope] = {}

    def lie(self, host: Host, key: KeyPair, honest: wire.Envelope) -> wire.Envelope | None:
        old = self._first.setdefault(honest.signer, honest)
        if old is honest:
            return None
        # The old beacon (its nonce and send time) re-signed as this epoch's.
        now = wire.decode_as(honest.body, radio.Beacon)
        replay = dataclasses.replace(wire.decode_as(old.body, radio.Beacon), epoch=now.epoch)
        host.attack.note("replayed_beacons", host.clock.now_ms())
        return wire.seal(replay, key, host.network_id)


class LocationSpoofFar(_BeaconLiar):
    name = "location-spoof-far"
    summary = "beacons claim a cell ~50 km from the registered one"
    codes = frozenset({"beacon_mismatch"})

    def lie(self, host: Host, key: KeyPair, honest: wire.Envelope) -> wire.Envelope | None:
        beacon = wire.decode_as(honest.body, radio.Beacon)
        lat, lng = h3.cell_to_latlng(format(beacon.location, "x"))
        far = int(h3.latlng_to_cell(lat + 0.45, lng, 12), 16)
        host.attack.note("spoofed_beacons", host.clock.now_ms())
        return wire.seal(dataclasses.replace(beacon, location=far), key, host.network_id)


class SelfWitnessSecondKey(_BeaconLiar):
    name = "self-witness-second-key"
    summary = "witnesses its own beacons with its other devices' keys"
    codes = frozenset({"same_owner", "self_witness"})

    def __init__(self) -> None:
        self._keys: list[KeyPair] = []

    def devices(self, host: Host, devices: Devices) -> Devices:
        self._keys = [devices.keys[r.device_id] for r in devices.radios]
        return super().devices(host, devices)

    def lie(self, host: Host, key: KeyPair, honest: wire.Envelope) -> wire.Envelope | None:
        beacon = wire.decode_as(honest.body, radio.Beacon)
        bid = radio.beacon_id(honest)
        for other in self._keys:
            if other.public_key == key.public_key:
                continue
            report = radio.WitnessReport(
                other.public_key, bid, -9_000, 1_000, beacon.frequency_hz, beacon.sent_at_ms + 5
            )
            host.attack.note("self_reports", host.clock.now_ms())
            host.submit_proof(wire.encode(wire.seal(report, other, host.network_id)))
        return None


class _RingRadio:
    """A radio of the node (its own, or one of its ring's) that witnesses only its own side."""

    def __init__(self, inner: RadioDriver, ring: frozenset[bytes], host: Host) -> None:
        self._inner, self._ring, self._host = inner, ring, host

    @property
    def device_id(self) -> bytes:
        return self._inner.device_id

    async def beacon(self, *, epoch: int, nonce: int) -> wire.Envelope:
        env = await self._inner.beacon(epoch=epoch, nonce=nonce)
        if env.signer in self._ring:
            self._host.attack.note("ring_beacons", self._host.clock.now_ms())
        return env

    async def witness(self, beacon_envelope: wire.Envelope) -> wire.Envelope | None:
        # The ring witnesses only itself, and the node's own staked radios never touch it:
        # one report between them would link the ring to a validator's device.
        if (self.device_id in self._ring) != (beacon_envelope.signer in self._ring):
            return None
        env = await self._inner.witness(beacon_envelope)
        if env is not None and self.device_id in self._ring:
            self._host.attack.note("ring_reports", self._host.clock.now_ms())
        return env


class WitnessRing(Role):
    """Radios of three other accounts (genesis entries, 167 km from the network) that witness
    only each other: ``same_owner`` never applies, every pair has two owners. Consensus pays
    radio coverage only when linked to a staked validator's device
    (:func:`depin_p2p.witness.rewards.anchored_beacons`): ``unanchored_coverage``."""

    name = "witness-ring"
    family = "radio"
    summary = "radios of 3 other accounts, far away, witnessing only each other"
    codes = frozenset({"unanchored_coverage"})
    ring = 3

    def devices(self, host: Host, devices: Devices) -> Devices:
        ring: frozenset[bytes] = getattr(host, "ring_ids", frozenset())  # the simulator sets it
        return dataclasses.replace(devices, radios=[_RingRadio(r, ring, host) for r in devices.radios])


class LocationSpoofNear(Role):
    """Radios registered next to another node's radio (:func:`devnet.sim.claim_near_cells`) that
    witness its beacons all the same: honest witness services send no report closer than the
    distance rule allows, this one sends each as heard."""

    name = "location-spoof-near"
    family = "radio"
    summary = "radios registered next to another node's radio, witnessing it anyway"
    codes = frozenset({"too_close"})
    claims_near = True

    def __init__(self) -> None:
        self._radios: list[RadioDriver] = []
        self._done: set[tuple[bytes, bytes]] = set()

    def devices(self, host: Host, devices: Devices) -> Devices:
        self._radios = list(devices.radios)
        return devices

    async def run(self, host: Host) -> None:
        while True:
            await host.clock.sleep_until_ms(host.clock.now_ms() + 500)
            if not self.active(host):
                continue
            for beacon_env in host.beacons_held(host.current_epoch()):
                await self._witness_too_close(host, beacon_env)

    async def _witness_too_close(self, host: Host, beacon_env: wire.Envelope) -> None:
        beacon = wire.decode_as(beacon_env.body, radio.Beacon)
        if beacon.device in {d.device_id for d in self._radios}:
            return  # its own: same_owner, another role's lie
        at = radio.cell_geo(beacon.location)
        bid = radio.beacon_id(beacon_env)
        for driver in self._radios:
            mine = host.registered_location(driver.device_id)
            if driver.device_id == beacon.device or (bid, driver.device_id) in self._done or mine is None:
                continue
            here = radio.cell_geo(mine)
            d_mm = radio.distance_mm(at, here)
            if d_mm is None or not radio.is_too_close(at, here, d_mm):
                continue  # its node's own witness service reports the others
            self._done.add((bid, driver.device_id))
            report = await driver.witness(beacon_env)
            if report is not None:
                host.attack.note("too_close_reports", host.clock.now_ms())
                host.submit_proof(wire.encode(report))


ROLES: tuple[type[Role], ...] = (
    WitnessRing, LocationSpoofNear,
    RssiLiar, TimeLiar, BeaconReplay, LocationSpoofFar, SelfWitnessSecondKey)
