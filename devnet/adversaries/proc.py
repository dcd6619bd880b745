"""``python -m devnet.adversaries.proc --role ROLE --home DIR``: an adversary on a real process.

``depin-devnet run`` starts this instead of ``depin-p2p run`` for a node the
manifest gives a role. It runs the node of DIR as ``depin-p2p run`` does
(same config, ledger, API, logs, signals and exit statuses), with the one
behaviour its role replaces; the node's own code has no switch for it.

Roles on processes: ``equivocating-validator`` (``--from-epoch E``): its
libp2p transport publishes, after each of its prevotes and precommits, the
twin from :func:`devnet.adversaries.equivocating.twin_vote`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.config import NodeConfig
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import ConfigError
from depin_p2p.gossip.libp2p import Libp2pConfig, Libp2pTransport
from depin_p2p.gossip.transport import CONSENSUS, topic
from depin_p2p.node import Node
from devnet.adversaries import equivocating

ROLES = (equivocating.ROLE,)
EXIT_USER_ERROR = 2


class EquivocatingTransport(Libp2pTransport):
    """The node's libp2p transport, publishing a twin after each vote of ours on the consensus topic."""

    def __init__(
        self, key: KeyPair, *, network_id: str, clock: Clock, config: Libp2pConfig, from_epoch: int
    ) -> None:
        super().__init__(key, network_id=network_id, clock=clock, config=config)
        self._key = key
        self._net = network_id
        self._from_epoch = from_epoch
        self._consensus_topic = topic(network_id, CONSENSUS)

    async def publish(self, topic_name: str, data: bytes) -> None:
        await super().publish(topic_name, data)
        if topic_name != self._consensus_topic:
            return
        item = wire.decode(data)
        if isinstance(item, wire.Envelope):
            twin = equivocating.twin_vote(item, self._key, self._net, self._from_epoch)
            if twin is not None:
                await super().publish(topic_name, wire.encode(twin))


class EquivocatingNode(Node):
    """A node whose transport equivocates from ``from_epoch`` on; everything else is the honest node."""

    def __init__(self, config: NodeConfig, *, from_epoch: int) -> None:
        super().__init__(config)
        self.from_epoch = from_epoch

    def _transport(self, clock: Clock) -> Libp2pTransport:
        return EquivocatingTransport(
            self.key,
            network_id=self.genesis.network_id,
            clock=clock,
            config=Libp2pConfig(listen_addr=self.config.listen.text),
            from_epoch=self.from_epoch,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the node of ``--home`` in its ``--role`` until SIGINT/SIGTERM; exit as ``depin-p2p run``."""
    parser = argparse.ArgumentParser(prog="python -m devnet.adversaries.proc", allow_abbrev=False)
    parser.add_argument("--role", choices=ROLES, required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--from-epoch", type=int, default=1)
    args = parser.parse_args(argv)
    from depin_p2p.config import load_config  # noqa: PLC0415
    from depin_p2p.logs import close_log_files, configure_logging  # noqa: PLC0415
    from depin_p2p.node import run_until_signalled  # noqa: PLC0415

    try:
        config = load_config(args.home)
        node = EquivocatingNode(config, from_epoch=args.from_epoch)
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
