"""Domain types shared by more than one subsystem. [pure]

Kept small on purpose: only what the ledger, the witness core, gossip and
consensus all need to agree on. Amounts are integer micro-units.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, Final, NewType, Protocol

import h3

from depin_p2p import wire
from depin_p2p.errors import Reject

MICRO = 1_000_000  # micro-units per token

AccountId = NewType("AccountId", bytes)  # an account's 32-byte Ed25519 public key
DeviceId = NewType("DeviceId", bytes)  # a device's own 32-byte Ed25519 public key

CentiDb = Annotated[int, wire.Range(-100_000, 100_000)]  # dB, dBm or dBi x 100


class DeviceKind(enum.IntEnum):
    RADIO = 1
    COMPUTE = 2


# Device parameter bounds: the ONE place they live. Registration (ledger.state),
# genesis loading (ledger.genesis) and the radio checks (witness.radio) all call
# validate_device, so they cannot drift. The radio bounds are what keep the FSPL
# bound meaningful: it trusts the registered tx power and gains.
LOCATION_RESOLUTION: Final = 12  # radio location: an H3 cell of exactly this resolution
MIN_FREQUENCY_HZ: Final = 400_000_000  # allowed radio band: 400 MHz ..
MAX_FREQUENCY_HZ: Final = 6_000_000_000  # .. 6 GHz
MIN_TX_POWER_CDBM: Final = -1_000  # -10 dBm ..
MAX_TX_POWER_CDBM: Final = 3_600  # .. 36 dBm (the usual EIRP ceiling of unlicensed bands)
MIN_GAIN_CDBI: Final = 0  # 0 dBi ..
MAX_GAIN_CDBI: Final = 1_500  # .. 15 dBi
MAX_COMPUTE_CAPACITY: Final = 1_024  # compute capacity units (see witness.rewards)


@wire.struct
@dataclass(frozen=True, slots=True)
class Device:
    """A registered device. Radio fields are zero for compute devices and vice versa.

    Attributes:
        device_id: the device's own public key; it signs the device's proofs.
        owner: the account that registered it and receives its rewards.
        location: H3 cell index (resolution 12) of the device's asserted position.
        frequency_hz: radio centre frequency.
        tx_power_cdbm: radio transmit power, centi-dBm.
        gain_cdbi: antenna gain, centi-dBi.
        capacity: claimed compute capacity, in units the witness core defines.
        registered_epoch: the epoch whose commit registered it.
    """

    device_id: wire.PublicKeyBytes
    owner: wire.PublicKeyBytes
    kind: DeviceKind
    location: wire.U64
    frequency_hz: wire.U64
    tx_power_cdbm: CentiDb
    gain_cdbi: CentiDb
    capacity: wire.U64
    registered_epoch: wire.U64


def _check_range(name: str, value: int, lo: int, hi: int, unit: str) -> None:
    if not lo <= value <= hi:
        raise Reject("bad_device_params", f"{name}: {value} {unit} is outside [{lo}, {hi}] {unit}")


# Devices already found within the bounds: a device is checked on every report it
# makes or hears, and its record rarely changes; a frozen record that passed once passes again.
_VALID_DEVICES: dict[Device, None] = {}
_VALID_DEVICES_CAP: Final = 1 << 16


def validate_device(device: Device) -> None:
    """Check a device's registered parameters against the network's bounds (memoised on success).

    Radio devices: ``location`` an H3 cell of resolution 12, ``frequency_hz``
    in [400 MHz, 6 GHz], ``tx_power_cdbm`` in [-1000, 3600] (-10 to 36 dBm),
    ``gain_cdbi`` in [0, 1500] (0 to 15 dBi), ``capacity`` 0. Compute devices:
    location and every radio field 0, ``capacity`` in [1, MAX_COMPUTE_CAPACITY].

    Raises:
        Reject: ``bad_device_params``; the detail starts with the field at
            fault (``"gain_cdbi: ..."``), so callers can name it.
    """
    if device in _VALID_DEVICES:
        return
    _check_device(device)
    if len(_VALID_DEVICES) >= _VALID_DEVICES_CAP:
        _VALID_DEVICES.clear()
    _VALID_DEVICES[device] = None


def _check_device(device: Device) -> None:
    if device.kind is DeviceKind.RADIO:
        cell = format(device.location, "x")
        if not (h3.is_valid_cell(cell) and h3.get_resolution(cell) == LOCATION_RESOLUTION):
            raise Reject("bad_device_params", f"location: {cell} is not an H3 cell of resolution 12")
        _check_range("frequency_hz", device.frequency_hz, MIN_FREQUENCY_HZ, MAX_FREQUENCY_HZ, "Hz")
        _check_range("tx_power_cdbm", device.tx_power_cdbm, MIN_TX_POWER_CDBM, MAX_TX_POWER_CDBM, "centi-dBm")
        _check_range("gain_cdbi", device.gain_cdbi, MIN_GAIN_CDBI, MAX_GAIN_CDBI, "centi-dBi")
        _check_range("capacity", device.capacity, 0, 0, "units")
    else:
        for name in ("location", "frequency_hz", "tx_power_cdbm", "gain_cdbi"):
            value = getattr(device, name)
            if value != 0:
                raise Reject("bad_device_params", f"{name}: must be 0 for a compute device, got {value}")
        _check_range("capacity", device.capacity, 1, MAX_COMPUTE_CAPACITY, "units")


@wire.struct
@dataclass(frozen=True, slots=True)
class Validator:
    """A validator: its account key and its voting power (its bonded stake)."""

    address: wire.PublicKeyBytes
    power: wire.U64


class DeviceRegistry(Protocol):
    """Read access to registered devices (the ledger implements it)."""

    def get_device(self, device_id: bytes) -> Device | None: ...
