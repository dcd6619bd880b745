"""One node's memory of good witness-report verdicts. [pure]

A report is checked when gossip delivers it (the proof pool), again when
the proposer builds the epoch's value, and again by every validator that
re-checks the proposal: the same :func:`~depin_p2p.witness.radio.validate_witness_report`
on the same bytes, each time decoding the body, looking up the witness,
and computing the path loss. :class:`ReportVerdicts` keeps each good
verdict, keyed by the envelope itself (all four fields: a copy with other
bytes is another key), and hands it back to the next check when nothing
the verdict rests on has changed:

* the same beacon (its id) and the same beaconer device, which fix the rest
  of the :class:`~depin_p2p.witness.radio.CheckedBeacon`;
* the same witness device in the caller's registry (compared by value, so
  a device changed by a commit, or a registry at another epoch, is checked
  afresh);
* the same network and :class:`~depin_p2p.witness.radio.RadioParams`.

What depends on the caller is still applied on every check: the reports
already seen for the beacon (``Ignore("duplicate")``) and, with ``now_ms``,
the arrival window. A verdict kept was reached with every rule applied, so
a check served from memory ends as the full check would. Failures are not
kept. A caller's ``decoded`` must be ``envelope.body`` decoded (as
:func:`~depin_p2p.witness.radio.validate_witness_report` requires): it is
what later checks get back from :meth:`ReportVerdicts.decoded`.

Verdicts are kept by their beacon's epoch, at most ``per_epoch`` for each
(more are checked in full, never kept), and dropped with the proof pool's
epochs (:meth:`ReportVerdicts.prune`): nothing outlives the proofs it is
about. A dict's get, set and pop are each atomic under the GIL, so a value
check in a worker thread may share the memory with the event loop.

A verdict is only as good as the ``verify`` that reached it, and a hit does
not verify again: share one memory only between checks whose ``verify``
passes good signatures alone (one node's; the simulator's honest nodes, not
an adversary whose cache passes what it marked itself).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from depin_p2p import wire
from depin_p2p.errors import Ignore
from depin_p2p.model import Device, DeviceRegistry
from depin_p2p.witness.radio import (
    DEFAULT_PARAMS,
    CheckedBeacon,
    CheckedReport,
    RadioParams,
    WitnessReport,
    validate_report_arrival,
    validate_witness_report,
)

PER_EPOCH = 16_384  # consensus.value.MAX_REPORTS: as many as one epoch's value may hold


@dataclass(frozen=True, slots=True)
class _Verdict:
    network_id: str
    beacon_id: bytes
    beaconer: Device
    params: RadioParams
    checked: CheckedReport


class ReportVerdicts:
    """Good witness-report verdicts, each reached once and reused while its inputs hold.

    Args:
        per_epoch: verdicts kept per beacon epoch.
    """

    def __init__(self, per_epoch: int = PER_EPOCH) -> None:
        self.per_epoch = per_epoch
        self._epochs: dict[int, dict[wire.Envelope, _Verdict]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return sum(len(kept) for kept in list(self._epochs.values()))

    def _find(self, envelope: wire.Envelope) -> _Verdict | None:
        for kept in list(self._epochs.values()):
            verdict = kept.get(envelope)
            if verdict is not None:
                return verdict
        return None

    def decoded(self, envelope: wire.Envelope) -> WitnessReport | None:
        """The decoded body of a report checked good before (None: not known here)."""
        verdict = self._find(envelope)
        return None if verdict is None else verdict.checked.report

    def prune(self, through_epoch: int) -> None:
        """Forget the verdicts on beacons of epochs up to ``through_epoch`` (the pool's prune)."""
        for epoch in [e for e in list(self._epochs) if e <= through_epoch]:
            self._epochs.pop(epoch, None)

    def validate(
        self,
        beacon: CheckedBeacon,
        envelope: wire.Envelope,
        *,
        registry: DeviceRegistry,
        network_id: str,
        seen: Collection[bytes] = (),
        now_ms: int | None = None,
        params: RadioParams = DEFAULT_PARAMS,
        verify: wire.Verifier = wire.verify_signature,
        decoded: WitnessReport | None = None,
    ) -> CheckedReport:
        """:func:`~depin_p2p.witness.radio.validate_witness_report`, served from memory when it can be.

        Same arguments, result and exceptions.
        """
        verdict = self._find(envelope)
        if verdict is not None and self._holds(verdict, beacon, registry, network_id, params):
            self.hits += 1
            checked = verdict.checked
            if now_ms is not None:
                validate_report_arrival(beacon.beacon, now_ms, params)
            if checked.report.witness in seen:
                raise Ignore("duplicate", "this witness already reported this beacon")
            return checked
        self.misses += 1
        checked = validate_witness_report(
            beacon,
            envelope,
            registry=registry,
            network_id=network_id,
            seen=seen,
            now_ms=now_ms,
            params=params,
            verify=verify,
            decoded=decoded,
        )
        kept = self._epochs.setdefault(beacon.beacon.epoch, {})
        if len(kept) < self.per_epoch:
            kept[envelope] = _Verdict(network_id, beacon.beacon_id, beacon.device, params, checked)
        return checked

    @staticmethod
    def _holds(
        verdict: _Verdict, beacon: CheckedBeacon, registry: DeviceRegistry, network_id: str, p: RadioParams
    ) -> bool:
        checked = verdict.checked
        return (
            verdict.network_id == network_id
            and verdict.beacon_id == beacon.beacon_id
            and (verdict.params is p or verdict.params == p)
            and verdict.beaconer == beacon.device
            and registry.get_device(checked.report.witness) == checked.device
        )
