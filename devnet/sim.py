"""`depin-devnet sim MANIFEST --seed N`: a whole scenario in one process, in virtual time.

Every node is built by :func:`depin_p2p.assemble.assemble`, the function
``depin-p2p run`` uses; only its transport (the seeded memory network), its
ledger and sign-state (in memory) and its devices (simulated on one seeded
world) differ. Time is trio's ``MockClock`` with autojump, and trio's own
scheduler is seeded, so one manifest and one seed give the same run and the
same ``report.json`` bytes.

Perturbations happen at the start of their epoch: ``kill`` cancels the
node's services and takes it off the network (its ledger and sign-state
survive, as on disk), ``restart`` assembles it anew on them, ``pause`` and
``resume`` freeze its traffic, ``disconnect``/``reconnect`` and
``partition``/``heal`` cut links, ``join`` starts a node for the first time,
and ``transfer``/``stake``/``unstake`` submit a transaction signed by the
node's key through its own pool. An adversary is an honest node with one
behaviour replaced by its role (:mod:`devnet.adversaries`): the role's hooks
see what the node publishes, wrap its device drivers before assembly and may
run one task beside its services; a :class:`devnet.adversaries.detect.Detector`
samples the honest nodes' rejection and penalty records for what caught it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import h3
import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.assemble import AssemblyConfig, Devices, NodeServices, assemble
from depin_p2p.clock import Clock
from depin_p2p.consensus.signer import MemorySignStateStore
from depin_p2p.consensus.state import Certificate, Precommit, Prevote, Proposal, certificate_hash
from depin_p2p.consensus.value import CheckedValues, EpochContent, ValueParams, check_content
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import DepinError, TransportError
from depin_p2p.gossip.memory import LinkProfile, MemoryNetwork, MemoryTransport, open_stream
from depin_p2p.gossip.transport import CONSENSUS, PeerEvent, PeerId, TransportCounters, topic
from depin_p2p.ledger.genesis import parse_genesis
from depin_p2p.ledger.memory import MemoryLedger
from depin_p2p.ledger.state import Stake, StateChanges, Transfer, Unstake, compute_genesis_changes
from depin_p2p.model import DeviceKind
from depin_p2p.schedule import EpochSchedule
from depin_p2p.witness.devices import ComputeDriver, SimulatedCompute, SimulatedRadio
from depin_p2p.witness.verdicts import ReportVerdicts
from depin_p2p.witness.world import World
from devnet.adversaries.base import AttackLog, Role
from devnet.adversaries.detect import Detector
from devnet.adversaries.registry import CATALOGUE, new_role
from devnet.genesis import DeviceKeys, Devnet, DevnetPlan, derive_key, device_entry, grid_cells, plan_devnet
from devnet.invariants import EpochRecord, NodeRecord, RunRecord, SignedRecord
from devnet.manifest import Manifest, Perturbation

if TYPE_CHECKING:
    from trio_typing import TaskStatus

L = TypeVar("L", bound=MemoryLedger)

GENESIS_TIME_MS = 1_767_225_600_000  # virtual: the simulated network's genesis
START_BEFORE_MS = 1_000  # nodes come up this long before the genesis
LIVENESS_EPOCHS = 3
SETTLE_EPOCHS = 2  # after the planned last epoch, how long the run may go on for stragglers
MESH_DEGREE = 6  # gossip mesh degree, as GossipSub D in gossip/libp2p (connections stay a full graph)


def devnet_for(manifest: Manifest, seed: int, *, genesis_time_ms: int = GENESIS_TIME_MS) -> Devnet:
    """The manifest's network: keys, devices and genesis, all derived from (name, seed).

    ``genesis_time_ms``: the simulator's virtual genesis by default; `run` passes a wall time.
    """
    net = manifest.network
    plan = DevnetPlan(
        nodes=net.nodes,
        validators=net.validators,
        radios_per_node=manifest.devices.radios_per_node if not manifest.devices.cells else 1,
        epoch_seconds=net.epoch_seconds,
        spacing_m=manifest.devices.spacing_m,
        seed=f"{manifest.name}/{seed}".encode(),
        stake=net.stake_micro[0],
    )
    devnet = plan_devnet(plan, genesis_time_ms=genesis_time_ms)
    genesis = dict(devnet.genesis)
    validators = genesis["validators"]
    assert isinstance(validators, list)
    genesis["validators"] = [dict(v, stake=s) for v, s in zip(validators, net.stake_micro, strict=True)]
    keep_compute = {devnet.node_keys[i].address for i in manifest.devices.compute_nodes}
    devices = [
        d
        for d in genesis["devices"]  # type: ignore[attr-defined]
        if d["kind"] != "compute" or d["owner"] in keep_compute
    ]
    if manifest.devices.cells:
        radios = [d for d in devices if d["kind"] == "radio"]
        for d, cell in zip(radios, manifest.devices.cells, strict=False):
            d["location"] = format(cell, "x")
        devices = [d for d in devices if d["kind"] != "radio" or d in radios[: len(manifest.devices.cells)]]
    kept = {d["device_id"] for d in devices}
    claim_near_cells(manifest, devnet, devices)
    ring = ring_devices(manifest, devnet, seed)
    genesis["devices"] = devices + [entry for _, entry in ring]
    return Devnet(
        devnet.plan,
        devnet.network_id,
        devnet.node_keys,
        tuple(d for d in devnet.devices if d.key.address in kept) + tuple(d for d, _ in ring),
        genesis,
    )


def claim_near_cells(manifest: Manifest, devnet: Devnet, devices: list[dict[str, Any]]) -> None:
    """Register the radios of an adversary whose role claims a cell too close (an adversary hook)
    at cells next to another node's first radio: a claim the simulated world takes as where they
    are, as it does every registered location."""
    for adv in manifest.adversaries:
        if not CATALOGUE[adv.role].claims_near:
            continue
        owner = devnet.node_keys[adv.node].address
        radios = [d for d in devices if d["kind"] == "radio"]
        others = [d for d in radios if d["owner"] != owner]
        if not others:
            continue
        target = str(others[0]["location"])
        ring = sorted(h3.grid_ring(target, 1))  # the six cells touching it, at its resolution
        for d, cell in zip((d for d in radios if d["owner"] == owner), ring, strict=False):
            d["location"] = cell


def ring_devices(manifest: Manifest, devnet: Devnet, seed: int) -> list[tuple[DeviceKeys, dict[str, object]]]:
    """Radios an adversary with a ring role runs for other accounts (one account each), on their
    own grid 167 km north of the network's, where no honest device hears them (an adversary hook)."""
    out = []
    for adv in manifest.adversaries:
        count = CATALOGUE[adv.role].ring
        lat, lng = devnet.plan.centre
        for k, cell in enumerate(grid_cells(count, (lat + 1.5, lng), manifest.devices.spacing_m)):
            label = f"{manifest.name}/{seed}/ring-{adv.node}-{k}".encode()
            d = DeviceKeys(derive_key(label, "device"), "radio", adv.node, cell)
            out.append((d, device_entry(d, devnet.node_keys) | {"owner": derive_key(label, "owner").address}))
    return out


def holdings(ledger: MemoryLedger) -> int:
    """Every balance and every bonded or unbonding stake: what the supply must equal."""
    total = sum(a.balance for a in ledger.accounts.values())
    return total + sum(v.stake + v.unbonding_total for v in ledger.validators.values())


class RecordingLedger(MemoryLedger):
    """An in-memory ledger that notes what each commit did, audited against its own holdings."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self.commits: list[
            tuple[int, int, int, int, int, bytes]
        ] = []  # epoch, t, before, after, burned, cert
        self.tx_failures: list[tuple[bytes, str]] = []  # (signer, code) of each tx the ledger skipped

    def holdings(self) -> int:
        return holdings(self)

    def commit(
        self, changes: StateChanges, certificate: bytes, certificate_hash: bytes | None = None
    ) -> None:
        before = self.holdings()
        super().commit(changes, certificate, certificate_hash)
        failed = [r for r in changes.tx_results if r.code is not None]
        if failed:
            value = wire.decode_as(certificate, Certificate).candidate.value
            txs = wire.decode_as(value, EpochContent).ledger.txs
            self.tx_failures += [(txs[r.index].signer, str(r.code)) for r in failed]
        if changes.epoch > 0:
            self.commits.append(
                (changes.epoch, self._clock.now_ms(), before, self.holdings(), changes.burned, certificate)
            )


class SharedSignatureCheck:
    """One Ed25519 memo for every simulated node: a signature checked good on one node is not
    checked again on another. Each node's own ``wire.SignatureCache`` still runs (and counts) the
    check as its own; only the arithmetic behind it is shared (it is a pure function of the bytes).
    Failures are not remembered, as in the node's cache."""

    __slots__ = ("checks", "good")

    def __init__(self) -> None:
        self.good: set[tuple[bytes, bytes, bytes]] = set()
        self.checks = 0

    def __call__(self, public_key: bytes, data: bytes, signature: bytes) -> None:
        key = (public_key, signature, data)
        if key in self.good:
            return
        self.checks += 1
        wire.verify_signature(public_key, data, signature)
        self.good.add(key)


DECODE_MEMO_CAPACITY = 100_000  # decoded messages the simulator's process remembers by their bytes


class _Tap:
    """The node's transport, recording what it signs on the consensus topic (and, for an
    adversary, publishing what its role adds after each message)."""

    def __init__(self, inner: MemoryTransport, node: SimNode) -> None:
        self._inner = inner
        self._node = node

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def publish(self, topic_name: str, data: bytes) -> None:
        node = self._node
        if node.role is not None and node.role.withholds(node, topic_name, data):
            self._record(topic_name, data)  # signed all the same, only never sent
            await trio.lowlevel.checkpoint()
            return
        await self._inner.publish(topic_name, data)
        self._record(topic_name, data)
        if node.role is not None:
            for extra in await node.role.on_publish(node, topic_name, data):
                self._record(topic_name, extra)
                await self._inner.publish(topic_name, extra)

    def _record(self, topic_name: str, data: bytes) -> None:
        node = self._node
        if topic_name != node.sim.consensus_topic:
            return
        item = wire.decode(data)
        if not isinstance(item, wire.Envelope) or item.signer != node.key.public_key:
            return
        if item.network_id != node.sim.network_id:
            return
        msg = wire.decode(item.body)
        if not isinstance(msg, Proposal | Prevote | Precommit):
            return
        kind = type(msg).__name__.lower()
        node.signed.append(SignedRecord(kind, msg.epoch, msg.round, wire.content_id(item.body).hex()))

    # The Transport methods the services call, delegated explicitly for the type checker.
    @property
    def peer_id(self) -> PeerId:
        return self._inner.peer_id

    @property
    def counters(self) -> TransportCounters:
        return self._inner.counters

    async def subscribe(
        self, topic_name: str, validator: Any, *, capacity: int = 1024, prepare: Any = None
    ) -> Any:
        return await self._inner.subscribe(topic_name, validator, capacity=capacity, prepare=prepare)

    def peer_events(self, capacity: int = 256) -> trio.MemoryReceiveChannel[PeerEvent]:
        return self._inner.peer_events(capacity)


@dataclass
class SimNode:
    index: int
    sim: Simulation
    key: KeyPair
    transport: MemoryTransport
    ledger: RecordingLedger
    store: MemorySignStateStore
    devices: Devices
    honest: bool = True
    role: Role | None = None
    from_epoch: int = 1
    ring_ids: frozenset[bytes] = frozenset()  # radios it runs for other accounts (a ring role)
    sybil_peers: set[str] = field(default_factory=set)  # bare transports it runs (an eclipse role)
    state: str = "down"  # up | down | paused | disconnected | absent
    services: NodeServices | None = None
    scope: trio.CancelScope | None = None
    signed: list[SignedRecord] = field(default_factory=list)
    offenders: set[str] = field(default_factory=set)
    attack: AttackLog = field(default_factory=AttackLog)

    # What a role sees of its node (devnet.adversaries.base.Host).
    @property
    def network_id(self) -> str:
        return self.sim.network_id

    @property
    def consensus_topic(self) -> str:
        return self.sim.consensus_topic

    @property
    def clock(self) -> Clock:
        return self.sim.clock

    @property
    def schedule(self) -> EpochSchedule:
        return self.sim.schedule

    def current_epoch(self) -> int:
        """The epoch this node is deciding: one past its last commit."""
        return self.ledger.last_epoch() + 1

    async def publish_raw(self, topic_name: str, data: bytes) -> None:
        await self.transport.publish(topic_name, data)

    async def send_frames(self, frames: Sequence[bytes]) -> int:
        return 0  # the memory network carries payloads, not py-libp2p frames

    def submit_proof(self, envelope: bytes) -> None:
        if self.services is not None:
            self.services.gossip.submit(envelope)

    def beacons_held(self, epoch: int) -> tuple[wire.Envelope, ...]:
        return () if self.services is None else self.services.pool.collect(epoch).beacons

    def restart_forgetting_sign_state(self) -> None:
        """Crash this node now and start it again at once with an empty sign-state store (its
        ledger kept): what it signed and the lock it held are forgotten. Runs beside the node
        (its own tasks, the caller's included, are cancelled by the crash)."""

        async def crash_and_restart() -> None:
            self.sim._stop(self)
            self.store = MemorySignStateStore()
            await self.sim._start(self.sim._nursery, self)

        self.sim._nursery.start_soon(crash_and_restart)

    async def open_streams(self) -> tuple[int, int]:
        """Open one more held stream to every connected peer: (opened, refused)."""
        held = refused = 0
        for peer in sorted(self.transport.peers()):
            try:
                ok = await open_stream(self.transport, peer)
            except TransportError:
                continue  # the link went away meanwhile
            held, refused = held + ok, refused + (not ok)
        return held, refused

    async def hold_sybil_connections(self, count: int, victim: int) -> None:
        """Run ``count`` bare transports of the memory network, each with its own peer id, each
        dialling node ``victim`` once and holding the connection (no topic, no handler) until
        cancelled. Their peer ids go into :attr:`sybil_peers`."""
        target = self.sim.nodes[victim].transport
        async with trio.open_nursery() as nursery:
            for k in range(count):
                sybil = self.sim.network.create_node(f"{self.key.peer_id}/sybil-{len(self.sybil_peers)}-{k}")
                self.sybil_peers.add(sybil.peer_id)
                await nursery.start(sybil.run)
                try:
                    await sybil.connect(target.listen_addrs()[0])
                except TransportError:
                    continue  # refused (the victim is down or banned it): no link to hold
                self.attack.note("sybil_connections", self.clock.now_ms())

    def registered_location(self, device_id: bytes) -> int | None:
        device = self.ledger.get_device(device_id)
        return None if device is None else device.location

    async def submit_tx(self, envelope: bytes) -> None:
        if self.services is not None:
            await self.services.txs.submit(envelope)

    def next_nonce(self) -> int:
        account = self.ledger.get_account(self.key.public_key)
        ledger_nonce = account.nonce if account else 0
        if self.services is None:
            return ledger_nonce
        return self.services.txpool.next_nonce(self.key.public_key, ledger_nonce)

    def collect_offenders(self) -> None:
        if self.services is not None:
            c = self.services.consensus
            self.offenders |= {k.hex() for k in c.evidence_offenders} | {
                k.hex() for k in c.conflicting_signers
            }


class Simulation:
    """One manifest, one seed: build the nodes, run the epochs, apply the perturbations, record."""

    def __init__(self, manifest: Manifest, seed: int, *, neutral: bool = False) -> None:
        """``neutral``: every adversary of the manifest runs as an honest node (its genesis, devices
        and seed unchanged): the baseline an attack's effect on earnings is measured against."""
        self.manifest = manifest
        self.seed = seed
        self.neutral = neutral
        self.devnet = devnet_for(manifest, seed)
        self.network_id = self.devnet.network_id
        self.consensus_topic = topic(self.network_id, CONSENSUS)
        epoch_ms = int(manifest.network.epoch_seconds * 1000)
        self.schedule = EpochSchedule(GENESIS_TIME_MS, epoch_ms)
        links = manifest.links
        profile = LinkProfile(
            latency_ms=max(1, links.delay_ms) if links.perturbs else 5,
            jitter_ms=links.jitter_ms,
            loss_ppm=int(links.loss * 1_000_000),
        )
        # Forward along a GossipSub-like mesh of degree 6 (our libp2p default), not to every peer.
        self.network = MemoryNetwork(seed=seed, default_link=profile, mesh_degree=MESH_DEGREE)
        self.genesis_text = json.dumps(self.devnet.genesis)
        genesis = parse_genesis(self.genesis_text)
        self.emission = genesis.emission_per_epoch
        self.genesis_supply = 0
        self.faults_healed_at: list[int] = []
        self.partition_groups: tuple[tuple[int, ...], ...] = ()
        self.peer_samples: list[tuple[int, int, int]] = []
        self.proof_verdicts: list[tuple[int, str, int]] = []
        self._last_counts: dict[tuple[int, str], int] = {}
        self.end_ms = 0
        self.progress: Callable[[int], None] = lambda epoch: None  # told each epoch as it starts
        self.nodes: list[SimNode] = []
        self.signature_check = SharedSignatureCheck()
        # Pure judgements every honest node makes alike, reached once for all of them: report
        # verdicts (each use still compares the caller's registry) and value checks (by bytes and
        # state root).
        self.report_verdicts: ReportVerdicts | None = ReportVerdicts()
        self.checked_values: CheckedValues | None = CheckedValues()
        self.detector: Detector | None = None

    def _build(self) -> None:
        """Nodes, devices and the world (inside trio: the clock reads trio's time)."""
        self.clock = Clock(wall_anchor_ms=GENESIS_TIME_MS - START_BEFORE_MS)
        manifest, seed = self.manifest, self.seed
        world_devices = tuple(with_genesis(RecordingLedger(self.clock), self.genesis_text).iter_devices())
        self.world = World(f"world/{seed}".encode(), world_devices)
        adversaries = {a.node: a for a in manifest.adversaries}
        for i, key in enumerate(self.devnet.node_keys):
            ledger = with_genesis(RecordingLedger(self.clock), self.genesis_text)
            self.genesis_supply = ledger.get_meta().total_supply
            node = SimNode(
                index=i,
                sim=self,
                key=key,
                transport=self.network.create_node(key.peer_id),
                ledger=ledger,
                store=MemorySignStateStore(),
                devices=self._devices(i, ledger),
            )
            adv = adversaries.get(i)
            if adv is not None and not self.neutral:
                node.honest = False
                node.role = new_role(adv.role)
                node.from_epoch = adv.from_epoch
                node.ring_ids = frozenset(
                    r.device_id
                    for r in node.devices.radios
                    if (d := ledger.get_device(r.device_id)) is not None and d.owner != key.public_key
                )
                node.devices = node.role.devices(node, node.devices)
            node.state = "absent" if i in manifest.late_joiners() else "down"
            self.nodes.append(node)
        if manifest.adversaries and not self.neutral:
            self.detector = Detector(self.nodes, GENESIS_TIME_MS)

    def _devices(self, i: int, ledger: MemoryLedger) -> Devices:
        mine = self.devnet.devices_of(i)
        radios = []
        computes: dict[bytes, ComputeDriver] = {}
        for d in mine:
            device = ledger.get_device(d.key.public_key)
            if device is None:
                continue
            if device.kind is DeviceKind.RADIO:
                radios.append(
                    SimulatedRadio(
                        key=d.key,
                        device=device,
                        world=self.world,
                        clock=self.clock,
                        network_id=self.network_id,
                    )
                )
            else:
                computes[d.key.public_key] = SimulatedCompute(
                    key=d.key, world=self.world, clock=self.clock, network_id=self.network_id
                )
        return Devices(radios, computes, {d.key.public_key: d.key for d in mine})

    # ------------------------------------------------------------- nodes

    async def _start(self, nursery: trio.Nursery, node: SimNode) -> None:
        scope = trio.CancelScope()
        node.scope = scope
        config = AssemblyConfig(
            network_id=self.network_id,
            schedule=self.schedule,
            emission_per_epoch=self.emission,
            key=node.key,
            offload_io=False,
            peer_of=lambda owner: PeerId(self._peer_of_owner(owner)),
            signature_check=self.signature_check,
            # An adversary's memories are its own: a verdict is only as good as the signature check
            # that reached it, and a node's cache passes what the node itself marked (its own
            # envelopes, signed or forged) unchecked.
            report_verdicts=self.report_verdicts if node.honest else None,
            checked_values=self.checked_values if node.honest else None,
        )
        tap: Any = _Tap(node.transport, node)
        node.services = assemble(
            tap, node.ledger, node.store, self.clock, devices=node.devices, config=config
        )

        async def life(task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                async with trio.open_nursery() as inner:
                    await inner.start(node.transport.run)
                    assert node.services is not None
                    await inner.start(node.services.run)
                    if node.role is not None:
                        inner.start_soon(node.role.run, node)
                    task_status.started()

        await nursery.start(life)
        node.state = "up"
        for other in self.nodes:
            if other is not node and other.state in ("up", "paused", "disconnected"):
                await node.transport.connect(other.transport.listen_addrs()[0])
        self._apply_links()

    def _peer_of_owner(self, owner: bytes) -> str:
        """The memory-network peer of the node whose key is ``owner`` (where its devices run)."""
        for n in self.nodes:
            if n.key.public_key == owner:
                return n.transport.peer_id
        return "unknown"

    def _stop(self, node: SimNode) -> None:
        node.collect_offenders()
        if node.scope is not None:
            node.scope.cancel()
        node.scope = None
        node.services = None
        node.state = "down"

    def _apply_links(self) -> None:
        cut_off = [n for n in self.nodes if n.state == "disconnected"]
        groups = [
            [self.nodes[i].transport.peer_id for i in g if self.nodes[i].state != "disconnected"]
            for g in self.partition_groups
        ]
        groups += [[n.transport.peer_id] for n in cut_off]
        if groups:
            self.network.partition(*[g for g in groups if g])
        else:
            self.network.heal()

    async def _perturb(self, nursery: trio.Nursery, p: Perturbation) -> None:
        now = self.clock.now_ms()
        node = self.nodes[p.node] if p.node is not None else None
        if p.action == "partition":
            self.partition_groups = p.groups
            self._apply_links()
        elif p.action == "heal":
            self.partition_groups = ()
            self._apply_links()
            self.faults_healed_at.append(now)
        elif node is None:
            raise AssertionError(f"perturbation {p.index} names no node")  # the manifest checked it
        elif p.action == "kill":
            self._stop(node)
        elif p.action in ("restart", "join"):
            await self._start(nursery, node)
            self.faults_healed_at.append(now)
        elif p.action == "pause":
            self.network.pause(node.transport.peer_id)
            node.state = "paused"
        elif p.action == "resume":
            self.network.resume(node.transport.peer_id)
            node.state = "up"
            self.faults_healed_at.append(now)
        elif p.action == "disconnect":
            node.state = "disconnected"
            self._apply_links()
        elif p.action == "reconnect":
            node.state = "up"
            self._apply_links()
            self.faults_healed_at.append(now)
        else:
            await self._submit_tx(node, p)

    async def _submit_tx(self, node: SimNode, p: Perturbation) -> None:
        services = node.services
        assert services is not None
        account = node.ledger.get_account(node.key.public_key)
        nonce = services.txpool.next_nonce(node.key.public_key, account.nonce if account else 0)
        tx: object
        if p.action == "transfer":
            assert p.to is not None
            tx = Transfer(nonce, self.nodes[p.to].key.public_key, p.amount_micro)
        elif p.action == "stake":
            tx = Stake(nonce, p.amount_micro)
        else:
            tx = Unstake(nonce, p.amount_micro)
        await services.txs.submit(wire.encode(wire.seal(tx, node.key, self.network_id)))

    # -------------------------------------------------------------- run

    def _sample(self, epoch: int) -> None:
        now = self.clock.now_ms() - GENESIS_TIME_MS
        for n in self.nodes:
            if n.state in ("up", "paused", "disconnected"):
                self.peer_samples.append((now, n.index, len(n.transport.peers())))
        counts: dict[tuple[int, str], int] = {}
        for n in self.nodes:
            if not n.honest or n.services is None:
                continue
            c = n.services.gossip.counters
            counts[(n.index, "accepted")] = c.items_accepted
            for code, k in c.reject_codes.items():
                counts[(n.index, code)] = k
        per_code: dict[str, int] = {}
        for key, value in counts.items():
            delta = value - self._last_counts.get(key, 0)
            if delta > 0:
                per_code[key[1]] = per_code.get(key[1], 0) + delta
        self._last_counts.update(counts)
        self.proof_verdicts += [(epoch, code, k) for code, k in sorted(per_code.items())]

    async def _main(self) -> None:
        self._build()
        epochs = self.manifest.network.epochs
        by_epoch: dict[int, list[Perturbation]] = {}
        for p in self.manifest.perturbations:
            by_epoch.setdefault(p.at_epoch, []).append(p)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.network.run)  # one task delivers every node's arrivals
            for node in self.nodes:
                if node.state == "down":
                    await self._start(nursery, node)
            if self.detector is not None:
                nursery.start_soon(self.detector.watch, self.clock)
            for epoch in range(1, epochs + 1):
                await self.clock.sleep_until_ms(self.schedule.start_of(epoch))
                self.progress(epoch)
                self._sample(epoch - 1)
                for p in by_epoch.get(epoch, []):
                    await self._perturb(nursery, p)
            deadline = self.schedule.end_of(epochs + SETTLE_EPOCHS)
            while self.clock.now_ms() < deadline:
                running = [n for n in self.nodes if n.honest and n.state == "up"]
                if all(n.ledger.last_epoch() >= epochs for n in running):
                    break
                await self.clock.sleep_until_ms(self.clock.now_ms() + 500)
            self._sample(epochs)
            if self.detector is not None:
                self.detector.sample(self.clock.now_ms())
            self.end_ms = self.clock.now_ms()
            for node in self.nodes:
                node.collect_offenders()
            nursery.cancel_scope.cancel()

    def run(self) -> RunRecord:
        """Run the scenario to its end (virtual time) and return what it recorded."""
        # Every node decodes the same bytes: one process-wide memo (the default, off, is for real runs).
        wire.memoize_decoding(DECODE_MEMO_CAPACITY)
        try:
            run_seeded(self._main, self.seed)
            return self._record()
        finally:
            wire.memoize_decoding(None)

    # ------------------------------------------------------------ records

    def _record(self) -> RunRecord:
        checked = _RecheckedChains(self.genesis_text, self.clock, self.network_id, self.emission)
        nodes = []
        for n in sorted(self.nodes, key=lambda n: -len(n.ledger.commits)):  # longest chains first
            epochs = []
            verdicts = checked.verdicts(tuple(c[5] for c in n.ledger.commits))
            for (_, t, before, after, burned, raw), ok in zip(n.ledger.commits, verdicts, strict=True):
                epochs.append(epoch_record(raw, t - GENESIS_TIME_MS, before, after, burned, rechecked=ok))
            validators = {v["address"] for v in self.devnet.genesis["validators"]}  # type: ignore[attr-defined]
            nodes.append(
                NodeRecord(
                    node=n.index,
                    honest=n.honest,
                    validator_address=n.key.public_key.hex() if n.key.address in validators else None,
                    running_at_end=n.state == "up",  # paused or cut off at the end: no commit is owed
                    epochs=tuple(epochs),
                    signed=tuple(n.signed),
                    evidence_offenders=tuple(sorted(n.offenders)),
                )
            )
        nodes.sort(key=lambda r: r.node)
        genesis = parse_genesis(self.genesis_text)
        power = {address.hex(): stake for address, stake in genesis.validators}
        return RunRecord(
            genesis_supply=self.genesis_supply,
            epoch_length_ms=self.schedule.epoch_length_ms,
            end_ms=self.end_ms - GENESIS_TIME_MS,
            power=power,
            nodes=tuple(nodes),
            faults_healed_at_ms=tuple(t - GENESIS_TIME_MS for t in self.faults_healed_at),
            liveness_epochs=LIVENESS_EPOCHS,
            peer_samples=tuple(self.peer_samples),
            proof_verdicts=tuple(self.proof_verdicts),
            attacks=self.detector.rows(self.genesis_text) if self.detector else (),
        )


def run_seeded(main: Callable[[], Awaitable[None]], seed: int) -> None:
    """``trio.run(main)`` in virtual time (``MockClock`` with autojump) with trio's scheduling a
    function of ``seed`` alone, not of what the process ran before.

    trio breaks ties between runnable tasks with its own RNG: it is seeded here. Before the
    shuffle, each batch of runnable tasks is in the order they became runnable, and deadlines
    that fall at the same instant (frequent in virtual time) expire in the order of their cancel
    scopes' addresses: the process's allocation history, so one seed gave another run after
    another Simulation. trio's switch for Hypothesis (``_ALLOW_DETERMINISTIC_SCHEDULING``) sorts
    each batch by task creation first; it is on while ``main`` runs, and restored after.
    """
    import trio._core._run as trio_run  # noqa: PLC0415

    trio_run._r.seed(seed)
    was = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = was  # type: ignore[misc]


def epoch_record(
    raw_certificate: bytes, committed_at_ms: int, before: int, after: int, burned: int, *, rechecked: bool
) -> EpochRecord:
    """What the invariants and the report need of one committed epoch (times from the genesis)."""
    cert = wire.decode_as(raw_certificate, Certificate)
    content = wire.decode_as(cert.candidate.value, EpochContent)
    return EpochRecord(
        epoch=cert.epoch,
        cert_hash=certificate_hash(cert).hex(),
        round=cert.round,
        committed_at_ms=committed_at_ms,
        supply_before=before,
        supply_after=after,
        emission=content.ledger.emission,
        slashed=burned,
        rewards=tuple((r.account.hex()[:16], r.amount) for r in content.ledger.rewards),
        rewarded_proofs=_proof_ids(cert.candidate.value, content),
        rechecked=rechecked,
    )


_PROOF_IDS: dict[bytes, tuple[str, ...]] = {}


def _proof_ids(value: bytes, content: EpochContent) -> tuple[str, ...]:
    """The content ids of a committed value's proofs, once per value (every node commits the same one)."""
    got = _PROOF_IDS.get(value)
    if got is None:
        proofs = (*content.beacons, *content.reports, *content.attestations)
        got = tuple(wire.content_id(wire.encode(e)).hex() for e in proofs)
        if len(_PROOF_IDS) >= 64:
            del _PROOF_IDS[next(iter(_PROOF_IDS))]
        _PROOF_IDS[value] = got
    return got


class _RecheckedChains:
    """Re-checks committed chains from the genesis on a fresh ledger; a chain that is a prefix
    of one already checked reuses its verdicts (with agreement, one pass serves every node)."""

    def __init__(self, genesis_text: str, clock: Clock, network_id: str, emission: int) -> None:
        self._genesis_text = genesis_text
        self._clock = clock
        self._params = ValueParams(network_id=network_id, emission_per_epoch=emission)
        self._checked: list[tuple[tuple[bytes, ...], list[bool]]] = []

    def verdicts(self, chain: tuple[bytes, ...]) -> list[bool]:
        """Per position of ``chain``: does everything up to it re-check?

        Chains are compared by certificate hash, which names what was decided, not by
        certificate bytes: two nodes keep different 2f+1 precommits of one decision.
        """
        ids = tuple(certificate_hash(wire.decode_as(raw, Certificate)) for raw in chain)
        for known, verdicts in self._checked:
            if known[: len(ids)] == ids:
                return verdicts[: len(ids)]
        verdicts = self._recheck(chain)
        self._checked.append((ids, verdicts))
        return verdicts

    def _recheck(self, chain: tuple[bytes, ...]) -> list[bool]:
        ledger = with_genesis(MemoryLedger(), self._genesis_text)
        out: list[bool] = []
        for raw in chain:
            cert = wire.decode_as(raw, Certificate)
            content = wire.decode_as(cert.candidate.value, EpochContent)
            try:
                changes = ledger.read(lambda v, c=content: check_content(v, c, self._params))  # type: ignore[misc]
            except DepinError:
                return out + [False] * (len(chain) - len(out))
            ledger.commit(changes, raw, certificate_hash(cert))
            out.append(True)
        return out


def with_genesis(ledger: L, genesis_text: str) -> L:
    """``ledger`` with the genesis state committed."""
    ledger.commit(compute_genesis_changes(ledger, parse_genesis(genesis_text).initial_state()), b"")
    return ledger


def simulate(manifest: Manifest, seed: int) -> RunRecord:
    """Run ``manifest`` with ``seed`` in the simulator; see :class:`Simulation`."""
    return Simulation(manifest, seed).run()
