"""The node's pool of proofs heard this epoch, the proposer's raw material.

Gossip hands every verified proof (beacon, witness report, compute
attestation) to :meth:`ProofPool.check` and then :meth:`ProofPool.add`. The
check is as strict as the pool's knowledge allows: a report whose beacon is
already here is fully validated (so a peer forwarding impossible physics is
penalised), one whose beacon has not arrived yet is only checked for a
registered radio signer and kept pending. Nothing here is trusted:
``consensus.value.build_content`` re-validates everything it includes, and
every validator re-checks it again.

Everything is bounded: per-epoch caps on beacons and attestations, a cap on
reports per beacon and on pending reports, and pruning of old epochs.

Reports per beacon are candidates of the rewards lottery: the pool keeps at
most ``reports_per_beacon`` (32, what a value may include; 14 are rewarded)
with the lowest :func:`~depin_p2p.witness.rewards.lottery_ticket`, evicting
a worse one for a better, once it knows the previous certificate's hash
(:attr:`ProofPool.chain_head`; before that, first come). A report that
cannot make the cut is ignored before its signature check and not
forwarded (``not_a_candidate``), and the node's own devices do not sign one
(:meth:`ProofPool.wants_report`): the work per beacon stays near the cut,
whatever the crowd of witnesses, and no crowd can push out a better ticket.

Only a proven offence costs the forwarding peer. A proof of epoch ``m``
needs the ledger through epoch ``m - 1`` (an honest node signs one only for
a device it saw registered by then); a peer that committed a registration
before us forwards proofs of a device we do not know *yet*. So
``unknown_device`` is a Reject only once our committed epoch
(:attr:`ProofPool.committed_epoch`, kept current by the witness service)
reaches ``m - 1``; before that it is an Ignore. Every other verdict on a
known device (kind, owner, place, radio parameters) is about fields that
never change once registered, so it holds whatever epoch the sender is at.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from depin_p2p import wire
from depin_p2p.errors import Ignore, Reject
from depin_p2p.gossip.validation import FAR_OUT_OF_WINDOW, FAR_TOO_OLD
from depin_p2p.model import DeviceKind, DeviceRegistry
from depin_p2p.witness.candidates import is_candidate
from depin_p2p.witness.compute import Attestation
from depin_p2p.witness.radio import (
    Beacon,
    CheckedBeacon,
    WitnessReport,
    beacon_id,
    validate_beacon,
    validate_witness_report,
)
from depin_p2p.witness.rewards import lottery_ticket
from depin_p2p.witness.verdicts import ReportVerdicts

# An epoch further than this from the running one is beyond any clock skew or relay delay: no
# honest node signs or forwards a proof of it (``far_out_of_window``, charged by gossip per item).
FAR_EPOCHS = 4


@dataclass(frozen=True, slots=True)
class PoolLimits:
    beacons_per_epoch: int = 2_048
    reports_per_beacon: int = 32  # consensus.value.MAX_REPORTS_PER_BEACON
    pending_reports: int = 16_384
    attestations_per_epoch: int = 2_048


@dataclass(frozen=True, slots=True)
class Collected:
    """One epoch's proofs, ready for ``build_content``."""

    beacons: tuple[wire.Envelope, ...]
    reports: tuple[wire.Envelope, ...]
    attestations: tuple[wire.Envelope, ...]


@dataclass(slots=True)
class _Epoch:
    beacons: dict[bytes, CheckedBeacon] = field(default_factory=dict)
    reports: dict[bytes, dict[bytes, wire.Envelope]] = field(default_factory=dict)
    tickets: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)  # beacon -> witness -> ticket
    worst: dict[bytes, bytes] = field(default_factory=dict)  # beacon -> its worst ticket kept, when full
    attestations: dict[tuple[bytes, bytes], wire.Envelope] = field(default_factory=dict)


class ProofPool:
    """Proofs by epoch. Not thread-safe: one trio task (or the gossip validator) uses it.

    Args:
        registry: device lookups (the ledger view of the last committed epoch).
        network_id: our network.
        limits: the bounds.
        signatures: the node's verified-signature cache (a private one if None); the pool's
            share of its checks is counted in :attr:`signature_checks`.
        verdicts: the node's memory of good report verdicts, shared with its value checks
            (None: every report checked in full).
    """

    def __init__(
        self,
        registry: DeviceRegistry,
        network_id: str,
        limits: PoolLimits | None = None,
        signatures: wire.SignatureCache | None = None,
        verdicts: ReportVerdicts | None = None,
    ) -> None:
        self.registry = registry
        self.verdicts = verdicts
        self.validate_report = validate_witness_report if verdicts is None else verdicts.validate
        self.signature_checks = wire.SignatureTally()
        cache = wire.SignatureCache() if signatures is None else signatures  # (an empty one is falsy)
        self.verify = cache.verifier(self.signature_checks)
        self.network_id = network_id
        self.limits = limits or PoolLimits()
        self._epochs: dict[int, _Epoch] = {}
        self._beacon_epoch: dict[bytes, int] = {}
        self._pending: OrderedDict[tuple[bytes, bytes], wire.Envelope] = OrderedDict()
        self.dropped = 0
        self.late_rejects: dict[tuple[bytes, str], int] = {}
        self._unchecked: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        # The epoch running by the wall clock (the witness service keeps it current); proofs
        # of other epochs than it, the one just ended (still to be decided) and the next are ignored.
        self.current_epoch = 1
        # The last epoch our ledger committed, as far as we know (the witness service keeps it
        # current; it may lag, never lead). None: unknown, so an unknown device is never proven.
        self.committed_epoch: int | None = None
        # (epoch, certificate hash) of the last commit we know: the lottery of epoch + 1 draws on it.
        self.chain_head: tuple[int, bytes] | None = None
        # Potential witnesses per beaconer (witness.candidates), from our registry; empty: no cut.
        self.potential: Mapping[bytes, int] = {}

    def _epoch(self, epoch: int) -> _Epoch:
        return self._epochs.setdefault(epoch, _Epoch())

    # ------------------------------------------------------------ checks

    def check(self, verified: wire.Verified, now_ms: int | None = None) -> None:
        """Gossip-time check of one verified proof; raises Reject / Ignore, returns to accept.

        Args:
            verified: the envelope with its checked signature.
            now_ms: local time; enables the beacon and report arrival windows.
        """
        try:
            self._check(verified, now_ms)
        except Reject as exc:
            if exc.code == "unknown_device" and not self._knows_devices_of(verified.message):
                raise Ignore("unknown_device", "not registered in our ledger yet") from None
            raise

    def screen(self, msg: object, signer: bytes) -> None:
        """The cheap checks gossip runs before the signature: epoch, claimed signer, registry.

        Raises:
            Ignore: ``far_out_of_window`` / ``far_too_old`` (an epoch more than :data:`FAR_EPOCHS` from the
                running one), ``wrong_epoch``, ``unknown_device`` (not provable yet).
            Reject: ``wrong_signer``, ``unknown_device``, ``unexpected_type``.
        """
        try:
            self._screen(msg, signer)
        except Reject as exc:
            if exc.code == "unknown_device" and not self._knows_devices_of(msg):
                raise Ignore("unknown_device", "not registered in our ledger yet") from None
            raise

    def _screen(self, msg: object, signer: bytes) -> None:
        epoch: int | None
        if isinstance(msg, Beacon):
            epoch, device = msg.epoch, msg.device
        elif isinstance(msg, WitnessReport):
            epoch, device = self._beacon_epoch.get(msg.beacon_id), msg.witness
        elif isinstance(msg, Attestation):
            epoch, device = msg.epoch, msg.witness
        else:
            raise Reject("unexpected_type", type(msg).__name__)
        if epoch is not None:
            self._check_epoch(epoch)
        if signer != device:
            raise Reject("wrong_signer", "not signed by the device it is about")
        if isinstance(msg, WitnessReport) and epoch is not None:
            self._check_candidate(epoch, msg)
        if self.registry.get_device(device) is None:
            raise Reject("unknown_device")

    def _ticket(self, epoch: int, beacon: Beacon, witness: bytes) -> bytes | None:
        """The lottery ticket of ``witness`` for ``beacon``, if we know the epoch's draw yet."""
        head = self.chain_head
        if head is None or head[0] != epoch - 1:
            return None
        return lottery_ticket(head[1], epoch, beacon.device, witness)

    def _worse_than_the_cut(self, epoch: int, beacon_id: bytes, witness: bytes) -> bool:
        slot = self._epochs[epoch]
        if witness in slot.tickets[beacon_id]:
            return False
        beacon = slot.beacons[beacon_id].beacon
        head, potential = self.chain_head, self.potential.get(beacon.device)
        if (
            head is not None
            and potential is not None
            and head[0] == epoch - 1
            and not is_candidate(head[1], epoch, beacon.device, witness, potential=potential)
        ):
            return True  # not among the lottery's candidates for this beacon
        worst = slot.worst.get(beacon_id)  # set only while the beacon's slot is full
        if worst is None:
            return False
        mine = self._ticket(epoch, beacon, witness)
        return mine is None or mine >= worst

    def _check_candidate(self, epoch: int, report: WitnessReport) -> None:
        if self._worse_than_the_cut(epoch, report.beacon_id, report.witness):
            raise Ignore("not_a_candidate", "not a lottery candidate, or beaten by 32 better tickets here")

    def wants_report(self, beacon_id: bytes, witness: bytes) -> bool:
        """Could a report of ``witness`` on this beacon still make the cut here? (Own devices ask.)"""
        epoch = self._beacon_epoch.get(beacon_id)
        return epoch is None or not self._worse_than_the_cut(epoch, beacon_id, witness)

    def _check_epoch(self, epoch: int) -> None:
        now = self.current_epoch
        if epoch > now + FAR_EPOCHS:
            raise Ignore(FAR_OUT_OF_WINDOW, f"epoch {epoch} while {now} runs")
        if epoch < now - FAR_EPOCHS:
            raise Ignore(FAR_TOO_OLD, f"epoch {epoch} while {now} runs")
        if not now - 1 <= epoch <= now + 1:
            raise Ignore("wrong_epoch", f"epoch {epoch} while {now} runs")

    def _knows_devices_of(self, msg: object) -> bool:
        """Has our ledger committed every registration a proof like ``msg`` may rely on?"""
        if self.committed_epoch is None:
            return False
        epoch_of = getattr(msg, "epoch", None)
        if isinstance(msg, WitnessReport):
            # A report names its epoch only through its beacon; without the beacon, assume
            # the latest epoch the pool accepts.
            epoch_of = self._beacon_epoch.get(msg.beacon_id, self.current_epoch + 1)
        if epoch_of is None:
            return False
        return self.committed_epoch >= int(epoch_of) - 1

    def _check(self, verified: wire.Verified, now_ms: int | None) -> None:
        msg = verified.message
        epoch_of = getattr(msg, "epoch", None)
        if epoch_of is not None:
            self._check_epoch(int(epoch_of))
        if isinstance(msg, Beacon):
            validate_beacon(
                verified.envelope,
                registry=self.registry,
                network_id=self.network_id,
                now_ms=now_ms,
                verify=self.verify,
            )
        elif isinstance(msg, WitnessReport):
            epoch = self._beacon_epoch.get(msg.beacon_id)
            if epoch is None:
                device = self.registry.get_device(msg.witness)
                if device is None or device.kind is not DeviceKind.RADIO:
                    raise Reject("unknown_device", "report signed by no registered radio")
                if verified.signer != msg.witness:
                    raise Reject("wrong_signer")
                self._unchecked[(msg.beacon_id, msg.witness)] = None  # judged when the beacon is here
                _trim(self._unchecked, self.limits.pending_reports)
                return
            slot = self._epochs[epoch]
            self.validate_report(
                slot.beacons[msg.beacon_id],
                verified.envelope,
                registry=self.registry,
                network_id=self.network_id,
                seen=slot.reports[msg.beacon_id].keys(),
                now_ms=now_ms,
                verify=self.verify,
                decoded=msg,  # gossip decoded these bytes already
            )
        elif isinstance(msg, Attestation):
            if verified.signer != msg.witness:
                raise Reject("wrong_signer")
            if self.registry.get_device(msg.witness) is None:
                raise Reject("unknown_device")
        else:
            raise Reject("unexpected_type", type(msg).__name__)

    # ------------------------------------------------------------ storage

    def add(self, verified: wire.Verified) -> None:
        """Store a proof that passed :meth:`check` (duplicates and overflow are dropped)."""
        msg = verified.message
        env = verified.envelope
        if isinstance(msg, Beacon):
            self._add_beacon(msg, env)
        elif isinstance(msg, WitnessReport):
            epoch = self._beacon_epoch.get(msg.beacon_id)
            key = (msg.beacon_id, msg.witness)
            unchecked = self._unchecked.pop(key, False) is None  # checked while its beacon was unknown
            if epoch is not None and unchecked and not _judge_late(self, epoch, msg, env):
                return
            if epoch is None:
                self._pending[key] = env
                while len(self._pending) > self.limits.pending_reports:
                    self._pending.popitem(last=False)
                    self.dropped += 1
            else:
                self._add_report(epoch, msg, env)
        elif isinstance(msg, Attestation):
            slot = self._epoch(msg.epoch)
            if len(slot.attestations) >= self.limits.attestations_per_epoch:
                self.dropped += 1
                return
            slot.attestations.setdefault((msg.witness, msg.provider), env)

    def _add_beacon(self, msg: Beacon, env: wire.Envelope) -> None:
        slot = self._epoch(msg.epoch)
        bid = beacon_id(env)
        if bid in slot.beacons:
            return
        if len(slot.beacons) >= self.limits.beacons_per_epoch:
            self.dropped += 1
            return
        try:
            checked = validate_beacon(
                env, registry=self.registry, network_id=self.network_id, verify=self.verify
            )
        except (Reject, Ignore):
            self.dropped += 1
            return
        slot.beacons[bid] = checked
        slot.reports[bid] = {}
        slot.tickets[bid] = {}
        self._beacon_epoch[bid] = msg.epoch
        for key in [k for k in self._pending if k[0] == bid]:
            report_env = self._pending.pop(key)
            report = wire.decode_as(report_env.body, WitnessReport)
            if _judge_late(self, msg.epoch, report, report_env):
                self._add_report(msg.epoch, report, report_env)

    def _add_report(self, epoch: int, msg: WitnessReport, env: wire.Envelope) -> None:
        slot = self._epochs[epoch]
        reports, tickets = slot.reports[msg.beacon_id], slot.tickets[msg.beacon_id]
        if msg.witness in reports:
            return
        ticket = self._ticket(epoch, slot.beacons[msg.beacon_id].beacon, msg.witness)
        if len(reports) >= self.limits.reports_per_beacon:
            worst = max(tickets, key=tickets.__getitem__) if tickets else None
            if ticket is None or worst is None or ticket >= tickets[worst]:
                self.dropped += 1
                return
            del reports[worst], tickets[worst]  # a better ticket takes a worse one's place
            self.dropped += 1
        reports[msg.witness] = env
        # Unranked (the draw was unknown when it came): last, so any ranked report can replace it.
        tickets[msg.witness] = ticket if ticket is not None else b"\xff" * 33
        if len(tickets) >= self.limits.reports_per_beacon:
            slot.worst[msg.beacon_id] = max(tickets.values())  # only on a change of a full slot

    # ------------------------------------------------------------ output

    def collect(self, epoch: int) -> Collected:
        """Everything held for ``epoch`` (in no particular order; the builder sorts)."""
        slot = self._epochs.get(epoch)
        if slot is None:
            return Collected((), (), ())
        reports = tuple(env for per_beacon in slot.reports.values() for env in per_beacon.values())
        beacons = tuple(b.envelope for b in slot.beacons.values())
        return Collected(beacons, reports, tuple(slot.attestations.values()))

    def prune(self, committed_epoch: int) -> None:
        """Forget epochs that can no longer be proposed (``<= committed_epoch``)."""
        for epoch in [e for e in self._epochs if e <= committed_epoch]:
            for bid in self._epochs.pop(epoch).beacons:
                self._beacon_epoch.pop(bid, None)
        if self.verdicts is not None:
            self.verdicts.prune(committed_epoch)


def _count(counts: dict[tuple[bytes, str], int], key: tuple[bytes, str], cap: int) -> None:
    counts[key] = counts.get(key, 0) + 1
    while len(counts) > cap:
        del counts[next(iter(counts))]


def _trim(items: OrderedDict[tuple[bytes, bytes], None], cap: int) -> None:
    while len(items) > cap:
        items.popitem(last=False)

def _judge_late(pool: ProofPool, epoch: int, report: WitnessReport, env: wire.Envelope) -> bool:
    """The check a report that outran its beacon (held, or checked before it) could not have had.

    Returns False when it is refused; ``pool.late_rejects`` counts it by (witness, code).
    """
    slot = pool._epochs[epoch]
    try:
        pool.validate_report(
            slot.beacons[report.beacon_id],
            env,
            registry=pool.registry,
            network_id=pool.network_id,
            seen=slot.reports[report.beacon_id].keys(),
            verify=pool.verify,
            decoded=report,
        )
    except (Reject, Ignore) as exc:
        _count(pool.late_rejects, (report.witness, exc.code), pool.limits.pending_reports)
        return False
    return True
