"""docs/PROTOCOL.md names everything the code puts on the network.

The lists come from the code, never from a copy: the wire registry, the
protocol-name constants, the topics and request handlers that the node's
services actually register when they start (an in-process cluster on the
memory network), and the stream protocols and GossipSub versions of a real
libp2p host.
"""

from __future__ import annotations

import re
from pathlib import Path

import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.gossip import libp2p as libp2p_transport
from depin_p2p.gossip import transport
from tests.sim import cluster

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
TEST_TYPE_IDS = range(200, 256)


def _doc() -> str:
    return DOC.read_text()


def _generic(name: str, network_id: str) -> str:
    return name.replace(f"/{network_id}/", "/<network>/")


def test_every_registered_message_type_has_a_row() -> None:
    doc = _doc()
    types = {tid: info for tid, info in wire.registered_types().items() if tid not in TEST_TYPE_IDS}
    assert len(types) > 20
    missing = [
        f"{tid} {info.cls.__name__}"
        for tid, info in sorted(types.items())
        if not re.search(rf"^\| {tid} \| `{info.cls.__name__}` \| {_domain(info)} \|", doc, re.MULTILINE)
    ]
    assert not missing, f"message types missing from {DOC.name} (or with the wrong domain): {missing}"


def _domain(info: wire.MessageInfo) -> str:
    return info.domain.value if info.domain is not None else "-"


def test_every_signing_domain_is_named() -> None:
    doc = _doc()
    assert [d.value for d in wire.Domain if f"| {d.value} |" not in doc] == []


def test_every_protocol_name_constant_is_documented() -> None:
    doc = _doc()
    names = {
        value
        for key, value in vars(transport).items()
        if key.isupper() and isinstance(value, str) and re.fullmatch(r"[a-z]+", value)
    }
    assert {"proofs", "tx", "consensus", "sync", "challenge"} <= names
    missing = sorted(n for n in names if f"`{transport.topic('<network>', n)}`" not in doc)
    assert not missing, f"names from gossip/transport.py missing from {DOC.name}: {missing}"


async def test_every_topic_and_handler_a_running_node_registers_is_documented(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(nodes=4, with_consensus=True)
    async with trio.open_nursery() as nursery:
        await c.start(nursery)
        node = c.transports[0]
        topics = set(node._subs)
        handlers = set(node._handlers)
        nursery.cancel_scope.cancel()
    net = c.devnet.network_id
    assert len(topics) == 3 and len(handlers) == 3
    doc = _doc()
    missing = sorted(_generic(n, net) for n in topics | handlers if f"`{_generic(n, net)}`" not in doc)
    assert not missing, f"registered topics/protocols missing from {DOC.name}: {missing}"


async def test_every_stream_protocol_of_the_libp2p_host_is_documented() -> None:
    net = "doc-net"
    node = libp2p_transport.Libp2pTransport(
        KeyPair.from_seed(bytes(range(32))), network_id=net, clock=Clock(wall_anchor_ms=0)
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            served = {str(p) for p in node._host.get_mux().handlers}
            nursery.cancel_scope.cancel()
    layers = {
        str(libp2p_transport.NOISE_PROTOCOL_ID),
        str(libp2p_transport.YAMUX_PROTOCOL_ID),
        *(str(p) for p in node._router.protocols),
    }
    assert {"/meshsub/1.2.0", "/meshsub/1.1.0"} <= layers
    doc = _doc()
    missing = sorted(_generic(p, net) for p in served | layers if f"`{_generic(p, net)}`" not in doc)
    assert not missing, f"libp2p protocols missing from {DOC.name}: {missing}"


def test_the_network_less_genesis_protocol_is_documented() -> None:
    from depin_p2p.gossip.genesis_fetch import GENESIS_PROTOCOL  # noqa: PLC0415

    assert f"| `{GENESIS_PROTOCOL}` |" in _doc()
