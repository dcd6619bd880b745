"""Which validators' devices witness which compute provider in an epoch. [pure]

For each compute provider, its witnesses are the ``k`` candidate devices with
the lowest score ``BLAKE2b-256("depin-p2p/assign" ‖ previous certificate hash
‖ u64_be(epoch) ‖ provider ‖ candidate)``, bytes compared as big-endian
numbers. Candidates are devices owned by a validator account, never the
provider itself nor any device of the provider's owner.

A provider cannot influence its witnesses: the previous certificate hash is
unknown when it registers (so grinding its key does not help), and nothing
else about the provider (capacity, location, responses, other providers)
enters the score. Everyone computes the same table from the ledger.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Set
from dataclasses import dataclass
from typing import Annotated, Final

from depin_p2p import wire
from depin_p2p.model import Device, DeviceKind

DEFAULT_WITNESSES_PER_PROVIDER: Final = 3
MAX_WITNESSES_PER_PROVIDER: Final = 32
_TAG: Final = b"depin-p2p/assign"


@wire.struct
@dataclass(frozen=True, slots=True)
class ComputeAssignment:
    """One provider's witnesses for one epoch, in score order (lowest first)."""

    provider: wire.PublicKeyBytes
    witnesses: Annotated[tuple[wire.PublicKeyBytes, ...], wire.MaxLen(MAX_WITNESSES_PER_PROVIDER)]


def assignment_score(prev_cert_hash: bytes, epoch: int, provider: bytes, candidate: bytes) -> bytes:
    """The lottery ticket of ``candidate`` for ``provider`` (lower wins)."""
    h = hashlib.blake2b(digest_size=32)
    for part in (_TAG, prev_cert_hash, epoch.to_bytes(8, "big"), provider, candidate):
        h.update(part)
    return h.digest()


def assign_compute_witnesses(
    *,
    prev_cert_hash: bytes,
    epoch: int,
    devices: Iterable[Device],
    validator_accounts: Set[bytes],
    k: int = DEFAULT_WITNESSES_PER_PROVIDER,
) -> tuple[ComputeAssignment, ...]:
    """Assign ``k`` distinct witness devices to every compute provider.

    Args:
        prev_cert_hash: hash of the previous epoch's certificate.
        epoch: the epoch being witnessed.
        devices: every registered device (providers are the COMPUTE ones
            with non-zero capacity; candidates those owned by a validator).
        validator_accounts: the validators' account keys.
        k: witnesses per provider; a provider with fewer eligible
            candidates gets all of them (and may then miss its quorum).

    Returns:
        One assignment per provider, sorted by provider id.

    Raises:
        ValueError: if ``k`` is outside [1, MAX_WITNESSES_PER_PROVIDER].
    """
    if not 1 <= k <= MAX_WITNESSES_PER_PROVIDER:
        raise ValueError(f"k = {k} outside [1, {MAX_WITNESSES_PER_PROVIDER}]")
    all_devices = sorted(devices, key=lambda d: d.device_id)
    candidates = [d for d in all_devices if d.owner in validator_accounts]
    out = []
    for provider in all_devices:
        if provider.kind is not DeviceKind.COMPUTE or provider.capacity == 0:
            continue
        eligible = [
            c.device_id for c in candidates if c.device_id != provider.device_id and c.owner != provider.owner
        ]
        eligible.sort(key=lambda cid: assignment_score(prev_cert_hash, epoch, provider.device_id, cid))
        out.append(ComputeAssignment(provider.device_id, tuple(eligible[:k])))
    return tuple(out)


def assignments_of_witness(assignments: Iterable[ComputeAssignment], witness: bytes) -> tuple[bytes, ...]:
    """The providers a witness device must challenge this epoch, sorted."""
    return tuple(sorted(a.provider for a in assignments if witness in a.witnesses))
