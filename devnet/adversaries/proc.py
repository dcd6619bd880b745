"""``python -m devnet.adversaries.proc --role ROLE --home DIR``: an adversary on a real process.

``depin-devnet run`` starts this instead of ``depin-p2p run`` for a node the
manifest gives a role. It runs the node of DIR as ``depin-p2p run`` does
(same config, ledger, API, logs, signals and exit statuses), with the one
behaviour its role replaces, through the role's own hooks, the ones the
simulator calls (:class:`devnet.adversaries.base.Role`): ``on_publish``
after each message its libp2p transport publishes, ``devices`` on its device
drivers before assembly, ``run`` as one more task beside its services. The
:class:`ProcHost` they see is backed by the real node: its key, clock,
libp2p transport, ledger and gossip service. The node's own code
(``depin_p2p``) has no switch for any of them.

What the role did is logged, one ``adversary.attack.sent`` line per attack
message (``what``, ``n``, ``at_ms``), in the node's JSON log, where
``depin-devnet run`` reads it for the report's adversary table.

Roles on processes: :data:`devnet.adversaries.registry.PROCESS_ROLES`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import trio

from depin_p2p import wire
from depin_p2p.assemble import Devices, NodeServices
from depin_p2p.clock import Clock
from depin_p2p.config import NodeConfig
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import ConfigError
from depin_p2p.gossip.libp2p import Libp2pConfig, Libp2pTransport
from depin_p2p.gossip.libp2p.raw import write_pubsub_frames
from depin_p2p.gossip.transport import CONSENSUS, topic
from depin_p2p.ledger.store import LedgerStore
from depin_p2p.node import Node
from depin_p2p.schedule import EpochSchedule
from depin_p2p.views import NodeView
from devnet.adversaries.base import AttackLog, Role
from devnet.adversaries.registry import PROCESS_ROLES, new_role

if TYPE_CHECKING:
    from trio_typing import TaskStatus

EXIT_USER_ERROR = 2

log = structlog.get_logger("devnet.adversaries")


class LoggedAttackLog(AttackLog):
    """The role's attack log, each note also a line of the node's JSON log."""

    def note(self, what: str, now_ms: int, n: int = 1) -> None:
        super().note(what, now_ms, n)
        log.info("adversary.attack.sent", what=what, n=n, at_ms=now_ms)


class ProcHost:
    """What a role sees of the process it runs in (:class:`devnet.adversaries.base.Host`).

    The node builds its parts in :meth:`AdversaryNode.run`'s order: the clock and the
    transport first, then the ledger's devices, then the services; a role's hooks run only
    after the part they read exists (``devices`` at assembly, the others once running).
    """

    def __init__(
        self, role: Role, key: KeyPair, network_id: str, schedule: EpochSchedule, from_epoch: int
    ) -> None:
        self.role = role
        self.key = key
        self.network_id = network_id
        self.consensus_topic = topic(network_id, CONSENSUS)
        self.schedule = schedule
        self.from_epoch = from_epoch
        self.attack: AttackLog = LoggedAttackLog()
        self._clock: Clock | None = None
        self._transport: RoleTransport | None = None
        self._store: LedgerStore | None = None
        self._services: NodeServices | None = None

    @property
    def clock(self) -> Clock:
        assert self._clock is not None, "the node builds its clock first"
        return self._clock

    def current_epoch(self) -> int:
        """The epoch this node is deciding: one past its last commit."""
        if self._services is not None:
            return self._services.consensus.last_epoch() + 1
        assert self._store is not None
        last: int = self._store.read(lambda v: v.last_epoch())
        return last + 1

    async def publish_raw(self, topic_name: str, data: bytes) -> None:
        assert self._transport is not None
        await self._transport.publish_unhooked(topic_name, data)

    def submit_proof(self, envelope: bytes) -> None:
        if self._services is not None:
            self._services.gossip.submit(envelope)

    async def send_frames(self, frames: Sequence[bytes]) -> int:
        assert self._transport is not None
        return await self._transport.send_frames(frames)

    def restart_forgetting_sign_state(self) -> None:
        raise NotImplementedError("a restart with the sign-state forgotten runs only in the simulator")

    async def open_streams(self) -> tuple[int, int]:
        raise NotImplementedError("held streams run only in the simulator here")

    async def hold_sybil_connections(self, count: int, victim: int) -> None:
        raise NotImplementedError("sybil peer ids run only in the simulator")

    def beacons_held(self, epoch: int) -> tuple[wire.Envelope, ...]:
        return () if self._services is None else self._services.pool.collect(epoch).beacons

    def registered_location(self, device_id: bytes) -> int | None:
        assert self._store is not None
        device = self._store.read(lambda v: v.get_device(device_id))
        return None if device is None else int(device.location)

    async def submit_tx(self, envelope: bytes) -> None:
        if self._services is not None:
            await self._services.txs.submit(envelope)

    def next_nonce(self) -> int:
        assert self._store is not None
        account = self._store.read(lambda v: v.get_account(self.key.public_key))
        ledger_nonce: int = account.nonce if account else 0
        if self._services is None:
            return ledger_nonce
        return self._services.txpool.next_nonce(self.key.public_key, ledger_nonce)


class RoleTransport(Libp2pTransport):
    """The node's libp2p transport; after each message it publishes, its role's extra messages."""

    def __init__(self, key: KeyPair, *, clock: Clock, config: Libp2pConfig, host: ProcHost) -> None:
        super().__init__(key, network_id=host.network_id, clock=clock, config=config)
        self._role_host = host

    async def publish(self, topic_name: str, data: bytes) -> None:
        if self._role_host.role.withholds(self._role_host, topic_name, data):
            await trio.lowlevel.checkpoint()
            return
        await super().publish(topic_name, data)
        for extra in await self._role_host.role.on_publish(self._role_host, topic_name, data):
            await super().publish(topic_name, extra)

    async def publish_unhooked(self, topic_name: str, data: bytes) -> None:
        await super().publish(topic_name, data)

    async def send_frames(self, frames: Sequence[bytes]) -> int:
        """Write ``frames`` raw to every connected peer (:func:`write_pubsub_frames`)."""
        return await write_pubsub_frames(self, frames)


class AdversaryNode(Node):
    """The node of a home with one behaviour replaced by ``role``; everything else is the honest node."""

    def __init__(self, config: NodeConfig, *, role: str, from_epoch: int) -> None:
        super().__init__(config)
        self.host = ProcHost(new_role(role), self.key, self.genesis.network_id, self.schedule, from_epoch)

    def _transport(self, clock: Clock) -> Libp2pTransport:
        self.host._clock = clock
        transport = RoleTransport(
            self.key, clock=clock, config=Libp2pConfig(listen_addr=self.config.listen.text), host=self.host
        )
        self.host._transport = transport
        return transport

    def _drivers(self, store: LedgerStore, clock: Clock) -> Devices:
        self.host._store = store
        return self.host.role.devices(self.host, super()._drivers(store, clock))

    async def run(self, *, task_status: TaskStatus[NodeView] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node and, beside its services, its role's task; cancelled together."""
        async with trio.open_nursery() as nursery:
            view: NodeView = await nursery.start(super().run)
            self.host._services = view.services
            nursery.start_soon(self.host.role.run, self.host)
            task_status.started(view)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the node of ``--home`` in its ``--role`` until SIGINT/SIGTERM; exit as ``depin-p2p run``."""
    parser = argparse.ArgumentParser(prog="python -m devnet.adversaries.proc", allow_abbrev=False)
    parser.add_argument("--role", choices=sorted(PROCESS_ROLES), required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--from-epoch", type=int, default=1)
    args = parser.parse_args(argv)
    from depin_p2p.config import load_config  # noqa: PLC0415
    from depin_p2p.logs import close_log_files, configure_logging  # noqa: PLC0415
    from depin_p2p.node import run_until_signalled  # noqa: PLC0415

    try:
        config = load_config(args.home)
        node = AdversaryNode(config, role=args.role, from_epoch=args.from_epoch)
        node.check_ports()
        # After importing libp2p (node.py does), which resets its logger on import.
        configure_logging(fmt=config.log_format, level=config.log_level, file=config.log_file)
        try:
            trio.run(run_until_signalled, node)
        finally:
            close_log_files()
    except ConfigError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
