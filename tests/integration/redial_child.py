"""A child for tests/integration/test_redial_netns.py: one Libp2pTransport on 0.0.0.0:4001 in a namespace.

``serve SEED``: listen, print the peer id, wait to be killed.
``dial SEED ADDR N``: connect to ADDR, hang up, N times; print ``ok K fail F``.
"""

from __future__ import annotations

import sys

import trio

from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import TransportError
from depin_p2p.gossip.libp2p import Libp2pConfig, Libp2pTransport


async def main(argv: list[str]) -> None:
    mode, seed = argv[0], int(argv[1])
    node = Libp2pTransport(
        KeyPair.from_seed(bytes([seed]) * 32),
        network_id="test",
        clock=Clock(),
        config=Libp2pConfig(listen_addr="/ip4/0.0.0.0/tcp/4001"),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        if mode == "serve":
            print(f"PEER {node.peer_id}", flush=True)
            await trio.sleep_forever()
        addr, cycles = argv[2], int(argv[3])
        ok = fail = 0
        for _ in range(cycles):
            try:
                peer = await node.connect(addr, redial=False)
                ok += 1
                await node.disconnect(peer)
            except TransportError as exc:
                fail += 1
                print(f"dial failed: {exc}", file=sys.stderr, flush=True)
        print(f"RESULT ok {ok} fail {fail}", flush=True)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
