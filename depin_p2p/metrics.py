"""The node's Prometheus metrics (``GET /metrics``).

Counters and gauges are read at scrape time from the live counter objects of
the node's services (:class:`~depin_p2p.gossip.transport.TransportCounters`,
``ServiceCounters``, ``ConsensusCounters``, the pools), so the services keep
plain integer fields and know nothing of Prometheus. Histograms are observed
by the node at its own measurement points:

* commit latency: from the moment an epoch's instance is due (the end of the
  epoch plus the grace for late proofs) to the commit of that epoch, for
  epochs committed live (a catch-up commit is counted, not timed);
* the round in which each epoch committed;
* the wall time of each step of an instance (value build, value re-check,
  sign-state write, commit; and the phases from the instance's start to the
  first prevote, to the first precommit, to the commit): see
  :mod:`depin_p2p.consensus.steps`;
* the time of the node's own check of each gossiped proof (the witness rules
  against the ledger and the pool; the envelope's signature check runs just
  before it inside the gossip service and is not included);
* the gossip delay of each proof: from its signed creation time (a beacon's
  ``sent_at_ms``, a report's ``received_at_ms``) to its check here.

Names follow the Prometheus conventions: prefix ``depin_``, base units
(``_seconds``, ``_bytes``; token amounts in ``_tokens``), counters end in
``_total``. The README lists every metric; a test scrapes a real node and
checks the list, and that every metric the Grafana dashboard in
``deploy/grafana/`` names exists.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from depin_p2p import __version__
from depin_p2p.consensus.steps import STEPS
from depin_p2p.model import MICRO

if TYPE_CHECKING:
    from depin_p2p.consensus.service import ConsensusService
    from depin_p2p.gossip.libp2p import Libp2pTransport
    from depin_p2p.gossip.service import ProofGossip
    from depin_p2p.txpool import TxPool
    from depin_p2p.wire import SignatureCache, SignatureTally
    from depin_p2p.witness.pool import Collected, ProofPool
    from depin_p2p.witness.service import WitnessService

# Seconds. A loopback devnet commits in ~0.3-0.8 s; a loaded or WAN one in seconds.
COMMIT_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0)
ROUND_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16)
PROOF_CHECK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
PROOF_DELAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROOF_KINDS = ("beacon", "report", "attestation")


@dataclass(frozen=True, slots=True)
class Family:
    """One counter or gauge family: name (without ``_total``), help, label names, samples."""

    kind: str  # "counter" | "gauge"
    name: str
    doc: str
    labels: tuple[str, ...] = ()
    samples: tuple[tuple[tuple[str, ...], float], ...] = ()


@dataclass(slots=True)
class Figures:
    """What the node reports at one scrape; filled by the node from its services."""

    families: list[Family] = field(default_factory=list)

    def counter(self, name: str, doc: str, value: float) -> None:
        self.families.append(Family("counter", name, doc, (), (((), value),)))

    def gauge(self, name: str, doc: str, value: float) -> None:
        self.families.append(Family("gauge", name, doc, (), (((), value),)))

    def labelled(self, kind: str, name: str, doc: str, label: str, values: Mapping[str, float]) -> None:
        samples = tuple(((key,), float(v)) for key, v in sorted(values.items()))
        self.families.append(Family(kind, name, doc, (label,), samples))


class _FiguresCollector(Collector):
    def __init__(self, figures: Callable[[], Figures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        for fam in self._figures().families:
            metric: CounterMetricFamily | GaugeMetricFamily
            if fam.kind == "counter":
                metric = CounterMetricFamily(fam.name, fam.doc, labels=fam.labels)
            else:
                metric = GaugeMetricFamily(fam.name, fam.doc, labels=fam.labels)
            for labels, value in fam.samples:
                metric.add_metric(list(labels), value)
            yield metric


def _libp2p_version() -> str:
    try:
        return metadata.version("libp2p")
    except metadata.PackageNotFoundError:
        return "unknown"


class NodeMetrics:
    """The registry served at ``/metrics``, and the histograms the node observes.

    Args:
        network_id: exported as a label of ``depin_build_info``.
    """

    def __init__(self, network_id: str) -> None:
        # No ``*_created`` series: in the text format they are extra gauges that nothing reads.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._network_id = network_id
        self.commit_latency = Histogram(
            "depin_consensus_commit_latency_seconds",
            "time from an epoch's instance being due (epoch end + grace) to its commit, live epochs",
            buckets=COMMIT_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.commit_round = Histogram(
            "depin_consensus_commit_round",
            "the round in which each epoch committed (0: first round)",
            buckets=ROUND_BUCKETS,
            registry=self.registry,
        )
        self.consensus_step = Histogram(
            "depin_consensus_step_seconds",
            "wall time of each step of an epoch's instance (depin_p2p/consensus/steps.py)",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        for step in STEPS:
            self.consensus_step.labels(step)  # exported (at zero) before the first observation
        self.proof_check = Histogram(
            "depin_proof_check_seconds",
            "time of the node's witness-rule check of one gossiped proof (after its signature check)",
            buckets=PROOF_CHECK_BUCKETS,
            registry=self.registry,
        )
        self.proof_delay = Histogram(
            "depin_gossip_proof_delay_seconds",
            "from a proof's signed creation time to its check at this node",
            ["kind"],
            buckets=PROOF_DELAY_BUCKETS,
            registry=self.registry,
        )
        for kind in ("beacon", "report"):
            self.proof_delay.labels(kind)  # exported (at zero) before the first observation

    def build_info(self) -> Family:
        labels = ("version", "network", "python", "libp2p")
        values = (__version__, self._network_id, platform.python_version(), _libp2p_version())
        return Family("gauge", "depin_build_info", "build of this node (always 1)", labels, ((values, 1.0),))

    def serve_figures(self, figures: Callable[[], Figures]) -> None:
        """Export the node's counters and gauges: ``figures`` is called once per scrape."""

        def with_build_info() -> Figures:
            out = figures()
            out.families.append(self.build_info())
            return out

        self.registry.register(_FiguresCollector(with_build_info))


def tokens(micro_units: int) -> float:
    """Micro-units as tokens, for gauges (never for anything hashed or committed)."""
    return micro_units / MICRO


@dataclass(frozen=True, slots=True)
class LedgerFigures:
    """One consistent read of the ledger, for a scrape."""

    last_epoch: int
    total_supply: int
    balance: int
    validators: int


def _transport_figures(f: Figures, transport: Libp2pTransport) -> None:
    t = transport.counters
    f.gauge("depin_peers", "connected peers", len(transport.peers()))
    f.labelled(
        "counter",
        "depin_transport_messages",
        "gossip messages by outcome at the transport",
        "outcome",
        {
            "published": t.published,
            "delivered": t.delivered,
            "ignored": t.ignored,
            "rejected": t.rejected,
            "duplicate": t.duplicates,
        },
    )
    f.labelled(
        "counter",
        "depin_transport_dropped",
        "gossip messages dropped by a bound",
        "reason",
        {
            "subscriber_full": t.dropped_subscriber_full,
            "rate_limited": t.dropped_rate_limited,
            "peer_events_full": t.dropped_peer_events_full,
        },
    )
    f.labelled(
        "counter", "depin_transport_rejected_by_code", "rejections by code", "code", t.reject_codes
    )
    f.counter("depin_transport_malformed_frames", "malformed frames received", t.malformed_frames)
    f.labelled(
        "counter",
        "depin_transport_requests",
        "request/response streams served here",
        "outcome",
        {"served": t.requests_served, "failed": t.requests_failed},
    )
    f.counter("depin_peers_banned", "peers banned for misbehaviour", t.peers_banned)
    f.counter(
        "depin_peers_dropped_unresponsive",
        "peers dropped after missed pings",
        t.peers_dropped_unresponsive,
    )


def _signature_figures(
    f: Figures, gossip: ProofGossip | None, pool: ProofPool | None, consensus: ConsensusService | None
) -> None:
    """Each checker's share of the node's signature checks: run (Ed25519) and from memory."""
    tallies: dict[str, SignatureTally] = {}
    if gossip is not None:
        tallies["gossip"] = gossip.counters.signatures
    if pool is not None:
        tallies["pool"] = pool.signature_checks
    if consensus is not None:
        tallies["consensus"] = consensus.counters.signatures
        tallies["value_check"] = consensus.value_signatures
    if not tallies:
        return
    f.labelled(
        "counter",
        "depin_signatures_verified_by",
        "Ed25519 signature checks run, by the checker that asked",
        "checker",
        {name: t.verified for name, t in tallies.items()},
    )
    f.labelled(
        "counter",
        "depin_signatures_cached_by",
        "signature checks answered from the verified cache, by the checker that asked",
        "checker",
        {name: t.cached for name, t in tallies.items()},
    )


def node_figures(
    *,
    epoch_now: int,
    ledger: LedgerFigures | None,
    transport: Libp2pTransport | None,
    gossip: ProofGossip | None,
    consensus: ConsensusService | None,
    pool: ProofPool | None,
    pending: Collected | None,
    txpool: TxPool | None,
    witness: WitnessService | None,
    signatures: SignatureCache | None = None,
) -> Figures:
    """The counters and gauges of one scrape, from the node's parts (None: not started yet)."""
    f = Figures()
    f.gauge("depin_epoch_current", "the epoch running by the wall clock", epoch_now)
    if signatures is not None:
        f.counter("depin_signatures_verified", "Ed25519 signature checks run", signatures.verified)
        f.counter(
            "depin_signatures_cached", "signature checks answered from the verified cache", signatures.cached
        )
        f.counter(
            "depin_signatures_marked", "own signatures entered as verified, never checked", signatures.marked
        )
    _signature_figures(f, gossip, pool, consensus)
    if ledger is not None:
        f.gauge(
            "depin_epoch_last_committed", "the last epoch committed to this node's ledger", ledger.last_epoch
        )
        f.gauge(
            "depin_ledger_supply_tokens",
            "total supply (balances + stakes), tokens",
            tokens(ledger.total_supply),
        )
        f.gauge("depin_account_balance_tokens", "this node's account balance, tokens", tokens(ledger.balance))
        f.gauge("depin_validators", "validators in the current set", ledger.validators)
    if transport is not None:
        _transport_figures(f, transport)
    if gossip is not None:
        g = gossip.counters
        f.counter("depin_gossip_proofs_submitted", "own proofs handed to gossip", g.submitted)
        f.counter("depin_gossip_bundles_published", "proof bundles published", g.bundles_published)
        f.labelled(
            "counter",
            "depin_gossip_bundles_received",
            "proof bundles received, by outcome",
            "outcome",
            {"accepted": g.bundles_accepted, "rejected": g.bundles_rejected, "ignored": g.bundles_ignored},
        )
        f.labelled(
            "counter",
            "depin_gossip_proofs_received",
            "proofs received in bundles, by outcome",
            "outcome",
            {
                "accepted": g.items_accepted,
                "ignored": g.items_ignored,
                "duplicate": g.items_duplicate,
                "over_check_budget": g.items_over_budget,
            },
        )
        f.labelled(
            "counter", "depin_gossip_rejected_by_code", "bundles rejected, by code", "code", g.reject_codes
        )
        f.labelled(
            "counter", "depin_gossip_ignored_by_code", "proofs ignored, by code", "code", g.ignore_codes
        )
        f.labelled(
            "counter",
            "depin_gossip_dropped",
            "proofs dropped by a full queue",
            "reason",
            {"submit_full": g.dropped_submit_full, "output_full": g.dropped_output_full},
        )
    if consensus is not None:
        c = consensus.counters
        f.counter("depin_consensus_epochs_committed", "epochs committed by this process", c.committed)
        f.counter("depin_consensus_epochs_synced", "epochs committed from a peer's certificate", c.synced)
        f.counter("depin_consensus_signed", "proposals and votes signed", c.signed)
        f.counter("depin_consensus_sign_refused", "signatures the signer refused", c.sign_refused)
        f.labelled(
            "counter",
            "depin_consensus_messages_dropped",
            "consensus messages dropped, by verdict",
            "verdict",
            {"ignored": c.messages_ignored, "rejected": c.messages_rejected},
        )
        f.counter("depin_consensus_evidence_seen", "duplicate-vote evidence seen", c.evidence_seen)
        f.gauge(
            "depin_consensus_round",
            "round of the running instance (-1: none running)",
            -1 if consensus.running_round is None else consensus.running_round,
        )
    if pending is not None:
        got = pending
        f.labelled(
            "gauge",
            "depin_proof_pool_pending",
            "proofs held for the running epoch",
            "kind",
            {"beacon": len(got.beacons), "report": len(got.reports), "attestation": len(got.attestations)},
        )
    if pool is not None:
        f.counter("depin_proof_pool_dropped", "proofs dropped by the pool's bounds", pool.dropped)
    if txpool is not None:
        x = txpool.counters
        f.gauge("depin_txpool_pending", "transactions waiting for an epoch", len(txpool))
        f.labelled(
            "counter",
            "depin_txpool_transactions",
            "transactions through the pool, by outcome",
            "outcome",
            {"accepted": x.accepted, "committed": x.committed, "dropped_stale": x.dropped_stale},
        )
    if witness is not None:
        w = witness
        f.labelled(
            "counter",
            "depin_witness_sent",
            "proofs this node's devices made",
            "kind",
            {"beacon": w.beacons_sent, "report": w.reports_sent, "attestation": w.attestations_sent},
        )
        f.counter("depin_witness_challenges_answered", "compute challenges answered", w.challenges_answered)
    return f
