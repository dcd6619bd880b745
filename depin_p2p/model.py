"""Domain types shared by more than one subsystem. [pure]

Kept small on purpose: only what the ledger, the witness core, gossip and
consensus all need to agree on. Amounts are integer micro-units.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, NewType, Protocol

from depin_p2p import wire

MICRO = 1_000_000  # micro-units per token

AccountId = NewType("AccountId", bytes)  # an account's 32-byte Ed25519 public key
DeviceId = NewType("DeviceId", bytes)  # a device's own 32-byte Ed25519 public key

CentiDb = Annotated[int, wire.Range(-100_000, 100_000)]  # dB, dBm or dBi x 100


class DeviceKind(enum.IntEnum):
    RADIO = 1
    COMPUTE = 2


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


@wire.struct
@dataclass(frozen=True, slots=True)
class Validator:
    """A validator: its account key and its voting power (its bonded stake)."""

    address: wire.PublicKeyBytes
    power: wire.U64


class DeviceRegistry(Protocol):
    """Read access to registered devices (the ledger implements it)."""

    def get_device(self, device_id: bytes) -> Device | None: ...
