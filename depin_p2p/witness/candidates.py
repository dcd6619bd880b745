"""Who may witness a beacon: the rewards lottery's candidates, known before anyone listens. [pure]

Without a bound, every radio that hears a beacon reports it, every node
checks every report, and the work of an epoch grows with the square of the
radios per node, the cube of the network. The rewards lottery
(:func:`~depin_p2p.witness.rewards.lottery_ticket` over the previous
certificate hash, the epoch, the beaconer and the witness, lowest first)
already says whose reports count; this module says it before the reports
are made:

- the *potential* witnesses of a beaconer are the registered radios of
  other owners within the witness distance (100 km) of it, counted once per
  registry (:func:`potential_witnesses`);
- a potential witness is a *candidate* for the beaconer's beacon of an
  epoch when its ticket, read as a 256-bit integer, is below
  ``2^256 · TARGET / potential``: about :data:`TARGET_CANDIDATES` (24) of
  them per beacon, whatever the crowd (:func:`is_candidate`; with at most
  that many potential witnesses, all are candidates).

Candidates are the lowest tickets, so the 14 the lottery rewards are all
candidates whenever at least 14 candidates hear the beacon (when every
potential witness hears it, for about 99 % of beacons): the rewards equal
those of the uncut crowd. A radio that is not a candidate does not report,
and a node ignores such a report before its signature check and does not
forward it (``not_a_candidate``). This is gossip policy, not validity:
consensus still accepts any valid report (at most 32 per beacon, kept by
the same ticket), so nodes whose registries differ for a moment (a device
just registered) disagree only on what they forward.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Final

from depin_p2p.errors import Reject
from depin_p2p.model import Device, DeviceKind
from depin_p2p.witness.radio import MAX_DISTANCE_M, cell_geo, distance_mm
from depin_p2p.witness.rewards import lottery_ticket

TARGET_CANDIDATES: Final = 24  # expected candidates per beacon: 14 rewarded plus a margin
_SPACE: Final = 1 << 256


def potential_witnesses(devices: Iterable[Device], max_distance_m: int = MAX_DISTANCE_M) -> dict[bytes, int]:
    """For each registered radio, how many radios of other owners lie within ``max_distance_m`` of it.

    The counts cost O(radios²); those of the last few registries are kept by value, so nodes
    holding equal registries (the simulator's) count once between them.
    """
    return dict(_potential_witnesses(tuple(devices), max_distance_m))


@functools.lru_cache(maxsize=4)
def _potential_witnesses(devices: tuple[Device, ...], max_distance_m: int) -> dict[bytes, int]:
    radios = []
    for d in devices:
        if d.kind is not DeviceKind.RADIO:
            continue
        try:
            radios.append((d, cell_geo(d.location)))
        except Reject:
            continue  # a registered device has a valid cell; nothing to count otherwise
    counts = {d.device_id: 0 for d, _ in radios}
    for i, (a, geo_a) in enumerate(radios):
        for b, geo_b in radios[i + 1 :]:
            if a.owner == b.owner:
                continue
            d_mm = distance_mm(geo_a, geo_b)
            if d_mm is not None and d_mm // 1000 <= max_distance_m:
                counts[a.device_id] += 1
                counts[b.device_id] += 1
    return counts


def is_candidate(
    prev_cert_hash: bytes,
    epoch: int,
    beaconer: bytes,
    witness: bytes,
    *,
    potential: int,
    target: int = TARGET_CANDIDATES,
) -> bool:
    """Is ``witness`` one of the lottery's candidates for ``beaconer``'s beacon of ``epoch``?"""
    if potential <= target:
        return True
    ticket = int.from_bytes(lottery_ticket(prev_cert_hash, epoch, beaconer, witness), "big")
    return ticket * potential < target * _SPACE
