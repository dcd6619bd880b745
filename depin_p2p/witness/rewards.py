"""Epoch rewards: HIP-15 radio shares, compute shares, the exact split of the pool. [pure]

Radio, per beacon (DESIGN.md): with w rewarded witnesses, redundancy N = 4
and decay r = 0.8, the beaconer earns w/N if w ≤ N else 2 - r^(w-N), each
witness 1 if w ≤ N else (N - 1 + r^(w-N))/w. r^m is the exact rational
4^m/5^m; shares are integers in units of 1/SHARE_SCALE, floored. At most
K = 14 valid witnesses are rewarded, picked by the lottery: lowest
BLAKE2b-256("depin-p2p/witness-lottery" ‖ previous certificate hash ‖
u64_be(epoch) ‖ beaconer device ‖ witness device); w counts the rewarded
ones. Receive time plays no part, and neither does the beacon id: the
beaconer picks its nonce and send time after the previous certificate is
known, so a ticket over the beacon id could be ground until its own
witnesses win. Nothing in the ticket is free for the beaconer once consensus
counts one beacon per device per epoch [beacon_limit].

Compute: a provider's claim counts when at least ``compute_quorum`` of its
assigned witnesses attested a pass at ``n = challenge_size(capacity)``
(attestations at another size prove other work and are not counted); it
weighs ``work_units(n)`` = n³, the verified work, never the declared
capacity itself.

The epoch's emission (micro-units) is cut into a radio pool
(``radio_pool_bps`` / 10,000 of it, floored) and a compute pool (the rest);
a pool with no shares at all goes to the other one. Each pool is split
over owner accounts in proportion to their share units: floor first, then
the leftover micro-units one each to the largest remainders (ties: lower
account bytes first), so the total paid equals the emission exactly. Rewards
go to the device's owner account.

Anchored coverage (device rings over several accounts): with ``anchors`` (the
accounts of validators bonding at least ``MIN_WITNESS_STAKE``; consensus passes
them), a beacon earns radio shares only when its beaconer is linked to an
anchor's device through this epoch's valid beacon-witness pairs
(:func:`anchored_beacons`). A ring of devices that witness only each other,
never heard by a device the staked network vouches for, is its own component
and earns nothing however many accounts it spreads over; ``same_owner`` cannot
see it, since every pair in it has two owners. Chosen over a registration bond
because it needs no new ledger state and no bond to size: the price of a ring
becomes a staked validator whose own device hears it (and which can then be
seen doing so), not a fee every honest device pays. The cost: honest devices
in an area no anchor's device reaches earn nothing until one does.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from depin_p2p.errors import InternalError
from depin_p2p.model import Device, DeviceRegistry
from depin_p2p.witness.assign import ComputeAssignment
from depin_p2p.witness.compute import Attestation, challenge_size, work_units

SHARE_SCALE: Final = 10**12  # share units per 1.0 reward unit
REDUNDANCY: Final = 4
DECAY_NUM, DECAY_DEN = 4, 5  # r = 0.8
MAX_REWARDED_WITNESSES: Final = 14
DEFAULT_RADIO_POOL_BPS: Final = 7_000
DEFAULT_COMPUTE_QUORUM: Final = 2
_LOTTERY_TAG: Final = b"depin-p2p/witness-lottery"
LOTTERY_MEMO: Final = 8_192  # tickets kept, most recent first

Payouts = tuple[tuple[bytes, int], ...]


@dataclass(frozen=True, slots=True)
class RewardParams:
    """Reward constants; consensus uses the defaults unless genesis says otherwise."""

    radio_pool_bps: int = DEFAULT_RADIO_POOL_BPS
    redundancy: int = REDUNDANCY
    max_rewarded_witnesses: int = MAX_REWARDED_WITNESSES
    compute_quorum: int = DEFAULT_COMPUTE_QUORUM


DEFAULT_PARAMS: Final = RewardParams()


@dataclass(frozen=True, slots=True)
class BeaconProof:
    """A beacon and the devices whose reports on it were valid (any order)."""

    beacon_id: bytes
    beaconer: bytes
    witnesses: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ComputeProof:
    """A provider, its challenge size n, and the assigned witnesses that attested a pass at that n."""

    provider: bytes
    n: int
    passed_by: tuple[bytes, ...]


def collect_compute_proofs(
    assignments: Iterable[ComputeAssignment], attestations: Iterable[Attestation], registry: DeviceRegistry
) -> tuple[ComputeProof, ...]:
    """One proof per assigned provider: the assigned witnesses that attested a pass at its size.

    The size is ``challenge_size`` of the provider's registered capacity.
    Attestations from unassigned witnesses, for unknown providers, at
    another size or with a failed outcome are left out (consensus has
    rejected them already; this keeps the count honest even if one slips
    through). Sorted by provider.

    Raises:
        InternalError: an assignment names an unregistered provider.
    """
    assigned = {a.provider: frozenset(a.witnesses) for a in assignments}
    sizes = {p: challenge_size(_device(registry, p).capacity) for p in assigned}
    passes: dict[bytes, set[bytes]] = {p: set() for p in assigned}
    for att in attestations:
        if (
            att.passed
            and att.witness in assigned.get(att.provider, frozenset())
            and att.n == sizes[att.provider]
        ):
            passes[att.provider].add(att.witness)
    return tuple(ComputeProof(p, sizes[p], tuple(sorted(ws))) for p, ws in sorted(passes.items()))


def beacon_shares(w: int, redundancy: int = REDUNDANCY) -> tuple[int, int]:
    """(beaconer, each witness) share units for a beacon with ``w`` rewarded witnesses."""
    if w < 0:
        raise ValueError("negative witness count")
    if w == 0:
        return 0, 0
    if w <= redundancy:
        return SHARE_SCALE * w // redundancy, SHARE_SCALE
    num, den = DECAY_NUM ** (w - redundancy), DECAY_DEN ** (w - redundancy)
    beaconer = SHARE_SCALE * (2 * den - num) // den
    witness = SHARE_SCALE * ((redundancy - 1) * den + num) // (w * den)
    return beaconer, witness


def lottery_ticket(prev_cert_hash: bytes, epoch: int, beaconer: bytes, witness: bytes) -> bytes:
    """A witness's ticket for the beaconer's beacon of ``epoch`` (lower wins).

    Only inputs fixed before the beacon is signed enter (never the beacon id),
    so the beaconer cannot steer the draw by re-signing its beacon. The last
    ``LOTTERY_MEMO`` tickets are kept: a report's ticket is asked for by the
    pool's screen, its cut and the value check (and, in the simulator, by
    every node).
    """
    return _lottery_ticket(prev_cert_hash, epoch, beaconer, witness)


@functools.lru_cache(maxsize=LOTTERY_MEMO)
def _lottery_ticket(prev_cert_hash: bytes, epoch: int, beaconer: bytes, witness: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=32)
    for part in (_LOTTERY_TAG, prev_cert_hash, epoch.to_bytes(8, "big"), beaconer, witness):
        h.update(part)
    return h.digest()


def select_rewarded_witnesses(
    prev_cert_hash: bytes,
    epoch: int,
    beaconer: bytes,
    witnesses: Iterable[bytes],
    k: int = MAX_REWARDED_WITNESSES,
) -> tuple[bytes, ...]:
    """The at most ``k`` valid witnesses a beacon of ``beaconer`` in ``epoch`` rewards, in ticket order."""
    unique = set(witnesses)
    return tuple(sorted(unique, key=lambda w: lottery_ticket(prev_cert_hash, epoch, beaconer, w))[:k])


def split_pool(pool: int, weights: Mapping[bytes, int]) -> dict[bytes, int]:
    """Split ``pool`` micro-units in proportion to ``weights``, paying out exactly ``pool``.

    Floors first; the leftover (fewer micro-units than accounts) goes one each
    to the largest remainders, ties to the lower account bytes. Accounts with
    zero weight get nothing; with no weight at all, nothing is paid.
    """
    if pool < 0 or any(w < 0 for w in weights.values()):
        raise ValueError("negative pool or weight")
    total = sum(weights.values())
    if total == 0:
        return {}
    out: dict[bytes, int] = {}
    remainders = []
    for account, weight in weights.items():
        if weight == 0:
            continue
        base, rem = divmod(pool * weight, total)
        out[account] = base
        remainders.append((-rem, account))
    leftover = pool - sum(out.values())
    remainders.sort()
    for _, account in remainders[:leftover]:
        out[account] += 1
    return out


def _device(registry: DeviceRegistry, device_id: bytes) -> Device:
    device = registry.get_device(device_id)
    if device is None:
        raise InternalError(f"rewarding unregistered device {device_id.hex()}")
    return device


def _owner(registry: DeviceRegistry, device_id: bytes) -> bytes:
    return _device(registry, device_id).owner


def radio_weights(
    prev_cert_hash: bytes,
    epoch: int,
    beacons: Iterable[BeaconProof],
    registry: DeviceRegistry,
    params: RewardParams = DEFAULT_PARAMS,
) -> dict[bytes, int]:
    """Share units per owner account from the epoch's beacons (one per beaconer)."""
    weights: dict[bytes, int] = {}
    seen: set[bytes] = set()
    beaconers: set[bytes] = set()
    for proof in beacons:
        if proof.beacon_id in seen:
            raise InternalError(f"beacon {proof.beacon_id.hex()} counted twice")
        if proof.beaconer in beaconers:
            # The lottery draws per (epoch, beaconer): consensus admits one beacon each [beacon_limit].
            raise InternalError(f"beaconer {proof.beaconer.hex()} counted twice")
        seen.add(proof.beacon_id)
        beaconers.add(proof.beaconer)
        rewarded = select_rewarded_witnesses(
            prev_cert_hash, epoch, proof.beaconer, proof.witnesses, params.max_rewarded_witnesses
        )
        beaconer_units, witness_units = beacon_shares(len(rewarded), params.redundancy)
        if beaconer_units:
            owner = _owner(registry, proof.beaconer)
            weights[owner] = weights.get(owner, 0) + beaconer_units
        for w in rewarded:
            owner = _owner(registry, w)
            weights[owner] = weights.get(owner, 0) + witness_units
    return weights


def anchored_beacons(
    beacons: Iterable[BeaconProof], registry: DeviceRegistry, anchors: frozenset[bytes]
) -> tuple[list[BeaconProof], list[BeaconProof]]:
    """Split the epoch's beacons into (anchored, unanchored).

    The graph's nodes are devices, its edges the (beaconer, witness) pairs of
    the beacons; a device owned by an anchor account is anchored, and so is
    every device linked to one. A beacon is anchored when its beaconer is.
    """
    proofs = list(beacons)
    links: dict[bytes, set[bytes]] = {}
    for proof in proofs:
        for w in proof.witnesses:
            links.setdefault(proof.beaconer, set()).add(w)
            links.setdefault(w, set()).add(proof.beaconer)
    frontier = [d for d in links if _owner(registry, d) in anchors]
    reached = set(frontier)
    while frontier:
        for other in links[frontier.pop()]:
            if other not in reached:
                reached.add(other)
                frontier.append(other)
    ok = [p for p in proofs if p.beaconer in reached or _owner(registry, p.beaconer) in anchors]
    return ok, [p for p in proofs if p not in ok]


def compute_weights(
    proofs: Iterable[ComputeProof], registry: DeviceRegistry, params: RewardParams = DEFAULT_PARAMS
) -> dict[bytes, int]:
    """Verified work per owner account: ``work_units(n)`` for claims with at least ``compute_quorum`` passes.

    Raises:
        InternalError: a provider is unregistered or counted twice, or a
            proof's n is not the size its registered capacity sets.
    """
    weights: dict[bytes, int] = {}
    seen: set[bytes] = set()
    for proof in proofs:
        if proof.provider in seen:
            raise InternalError(f"provider {proof.provider.hex()} counted twice")
        seen.add(proof.provider)
        if len(set(proof.passed_by)) < params.compute_quorum:
            continue
        device = _device(registry, proof.provider)
        if proof.n != challenge_size(device.capacity):
            raise InternalError(f"provider {proof.provider.hex()} proved n = {proof.n}, not its size")
        weights[device.owner] = weights.get(device.owner, 0) + work_units(proof.n)
    return weights


def compute_epoch_rewards(
    *,
    prev_cert_hash: bytes,
    epoch: int,
    emission: int,
    beacons: Iterable[BeaconProof],
    compute: Iterable[ComputeProof],
    registry: DeviceRegistry,
    params: RewardParams = DEFAULT_PARAMS,
    anchors: frozenset[bytes] | None = None,
) -> Payouts:
    """The epoch's payouts: ``((owner account, micro-units), ...)`` sorted by account.

    The amounts sum to ``emission`` exactly when anything earned a share, and
    the result is empty otherwise (nothing is minted).

    Raises:
        InternalError: a proof names an unregistered device, or a beacon, a
            beaconer or a provider twice.
        ValueError: a negative emission or a pool fraction outside [0, 10,000].

    ``anchors``: the accounts that anchor coverage (None: every beacon counts).
    """
    if emission < 0 or not 0 <= params.radio_pool_bps <= 10_000:
        raise ValueError("bad emission or radio_pool_bps")
    if anchors is not None:  # only coverage linked to the staked network earns (module docstring)
        beacons = anchored_beacons(beacons, registry, anchors)[0]
    radio = radio_weights(prev_cert_hash, epoch, beacons, registry, params)
    comp = compute_weights(compute, registry, params)
    radio_pool = emission * params.radio_pool_bps // 10_000
    compute_pool = emission - radio_pool
    if not any(radio.values()):
        radio_pool, compute_pool = 0, emission
    if not any(comp.values()):
        radio_pool, compute_pool = radio_pool + compute_pool, 0
    totals: dict[bytes, int] = {}
    for part in (split_pool(radio_pool, radio), split_pool(compute_pool, comp)):
        for account, amount in part.items():
            totals[account] = totals.get(account, 0) + amount
    return tuple(sorted((a, v) for a, v in totals.items() if v > 0))
