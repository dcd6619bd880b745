"""Which validators' devices witness which compute provider in an epoch. [pure]

Witnesses are drawn by *validator*, weighted by bonded stake, never by
device: registering devices is free, so a device-uniform draw let one
account with dust stake and many devices fill a provider's quorum. For each
compute provider (a COMPUTE device with non-zero capacity):

1. The eligible validators are those with stake ≥ ``min_stake``
   (:data:`MIN_WITNESS_STAKE` by default), other than the provider's owner,
   that own at least one registered device; sorted by address.
2. ``k`` of them are drawn without replacement: draw ``j`` (j = 0, 1, ...)
   takes ``x = int_be(BLAKE2b-512("depin-p2p/assign-draw" ‖ previous
   certificate hash ‖ u64_be(epoch) ‖ provider ‖ u32_be(j))) mod S``, where S
   is the remaining validators' total stake, and picks the validator whose
   cumulative-stake interval (in address order) contains ``x``; that
   validator leaves the pool. Fewer than ``k`` eligible: all of them.
3. Each drawn validator witnesses with one device: the one with the lowest
   :func:`assignment_score` ``BLAKE2b-256("depin-p2p/assign" ‖ previous
   certificate hash ‖ u64_be(epoch) ‖ provider ‖ device)`` (bytes compared as
   big-endian numbers) among the devices it owns.

So a validator holds at most one of a provider's witness slots whatever its
device count, and its chance of holding one grows with its stake; holding a
quorum of q slots takes q distinct validators with stake at or above the
minimum. A provider cannot influence its witnesses: the previous certificate
hash is unknown when it registers (so grinding its key does not help), and
nothing else about the provider (capacity, location, responses, other
providers) enters the draw. Everyone computes the same table from the ledger.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Final

from depin_p2p import wire
from depin_p2p.model import MICRO, Device, DeviceKind, Validator

DEFAULT_WITNESSES_PER_PROVIDER: Final = 3
MAX_WITNESSES_PER_PROVIDER: Final = 32
# A validator below this bonded stake never witnesses compute: dust stake buys no slot.
MIN_WITNESS_STAKE: Final = 100 * MICRO
_TAG: Final = b"depin-p2p/assign"
_DRAW_TAG: Final = b"depin-p2p/assign-draw"


@wire.struct
@dataclass(frozen=True, slots=True)
class ComputeAssignment:
    """One provider's witnesses for one epoch, in draw order (one device per validator)."""

    provider: wire.PublicKeyBytes
    witnesses: Annotated[tuple[wire.PublicKeyBytes, ...], wire.MaxLen(MAX_WITNESSES_PER_PROVIDER)]


def assignment_score(prev_cert_hash: bytes, epoch: int, provider: bytes, candidate: bytes) -> bytes:
    """A device's ticket to be its validator's witness for ``provider`` (lower wins)."""
    h = hashlib.blake2b(digest_size=32)
    for part in (_TAG, prev_cert_hash, epoch.to_bytes(8, "big"), provider, candidate):
        h.update(part)
    return h.digest()


def _draw(prev_cert_hash: bytes, epoch: int, provider: bytes, index: int) -> int:
    """Draw ``index`` for ``provider``: a 512-bit number (mod the stake total, bias < 2^-440)."""
    h = hashlib.blake2b(digest_size=64)
    for part in (_DRAW_TAG, prev_cert_hash, epoch.to_bytes(8, "big"), provider, index.to_bytes(4, "big")):
        h.update(part)
    return int.from_bytes(h.digest(), "big")


def _pick(pool: list[tuple[bytes, int]], x: int) -> int:
    """The index of the pool entry whose cumulative-stake interval holds ``x`` (0 ≤ x < total)."""
    for i, (_, stake) in enumerate(pool):
        if x < stake:
            return i
        x -= stake
    raise ValueError("draw outside the pool's total stake")


def _draw_validators(
    pool: list[tuple[bytes, int]], k: int, prev_cert_hash: bytes, epoch: int, provider: bytes
) -> list[bytes]:
    """Up to ``k`` validators of ``pool`` ((address, stake) in address order), by stake, no replacement."""
    pool = list(pool)
    total = sum(stake for _, stake in pool)
    out: list[bytes] = []
    for index in range(min(k, len(pool))):
        address, stake = pool.pop(_pick(pool, _draw(prev_cert_hash, epoch, provider, index) % total))
        out.append(address)
        total -= stake
    return out


def assign_compute_witnesses(
    *,
    prev_cert_hash: bytes,
    epoch: int,
    devices: Iterable[Device],
    validators: Iterable[Validator],
    k: int = DEFAULT_WITNESSES_PER_PROVIDER,
    min_stake: int = MIN_WITNESS_STAKE,
) -> tuple[ComputeAssignment, ...]:
    """Assign up to ``k`` witness devices, of ``k`` distinct validators, to every compute provider.

    Args:
        prev_cert_hash: hash of the previous epoch's certificate.
        epoch: the epoch being witnessed.
        devices: every registered device (providers are the COMPUTE ones
            with non-zero capacity).
        validators: the validator set (address, power = bonded stake).
        k: witnesses per provider; a provider with fewer eligible
            validators gets one device of each (and may then miss its quorum).
        min_stake: the least stake (micro-units) that makes a validator eligible.

    Returns:
        One assignment per provider, sorted by provider id.

    Raises:
        ValueError: if ``k`` is outside [1, MAX_WITNESSES_PER_PROVIDER],
            ``min_stake`` is below 1, or a validator appears twice.
    """
    if not 1 <= k <= MAX_WITNESSES_PER_PROVIDER:
        raise ValueError(f"k = {k} outside [1, {MAX_WITNESSES_PER_PROVIDER}]")
    if min_stake < 1:
        raise ValueError("min_stake must be at least 1 micro-unit")
    stakes: dict[bytes, int] = {}
    for v in validators:
        if v.address in stakes:
            raise ValueError(f"validator {v.address.hex()} listed twice")
        stakes[v.address] = v.power
    all_devices = sorted(devices, key=lambda d: d.device_id)
    owned: dict[bytes, list[bytes]] = {}
    for d in all_devices:
        if stakes.get(d.owner, 0) >= min_stake:
            owned.setdefault(d.owner, []).append(d.device_id)
    eligible = sorted((address, stakes[address]) for address in owned)
    out = []
    for provider in all_devices:
        if provider.kind is not DeviceKind.COMPUTE or provider.capacity == 0:
            continue
        pid = provider.device_id
        pool = [(address, stake) for address, stake in eligible if address != provider.owner]
        witnesses = tuple(
            min(owned[address], key=lambda device: assignment_score(prev_cert_hash, epoch, pid, device))
            for address in _draw_validators(pool, k, prev_cert_hash, epoch, pid)
        )
        out.append(ComputeAssignment(pid, witnesses))
    return tuple(out)


def assignments_of_witness(assignments: Iterable[ComputeAssignment], witness: bytes) -> tuple[bytes, ...]:
    """The providers a witness device must challenge this epoch, sorted."""
    return tuple(sorted(a.provider for a in assignments if witness in a.witnesses))
