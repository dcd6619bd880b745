"""Radio roles: a node's own radio devices lying in what they sign.

Each wraps the node's radio drivers (:class:`depin_p2p.witness.devices.RadioDriver`)
and re-signs what the honest driver produced, altered, with the device's own
key: the lie is the device's, exactly as a modified firmware would sign it.

- ``rssi-liar``: reports every beacon heard 30 dB louder than heard, above
  the free-space bound for the distance. Caught as ``rssi_above_fspl_bound``.
- ``time-liar``: reports ``received_at`` a second before the beacon was
  sent (inside any gossip time window, outside the beacon's). Caught as
  ``stale``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

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


ROLES: tuple[type[Role], ...] = (RssiLiar, TimeLiar)
