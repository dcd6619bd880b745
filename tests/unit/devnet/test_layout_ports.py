"""Devnet ports: chosen once, never taken by anyone else before the node binds them.

A 16-node devnet used to fail at start with ``api.port … already in use``:
the layout picked each port by binding port 0 and closing it again, so the
port came from the kernel's ephemeral range, which the kernel then handed
to the next program that bound port 0 (a test, another devnet's node, any
listener on port 0) before our node got to bind it.
"""

from __future__ import annotations

import socket
from pathlib import Path

from depin_p2p.config import check_port_free
from devnet import layout
from devnet.genesis import DevnetPlan, plan_devnet
from devnet.layout import write_layout

T0 = 1_767_225_600_000


def _ports(lay: layout.Layout) -> list[int]:
    return [p for n in lay.nodes for p in (n.p2p_port, n.api_port)]


def test_ports_survive_a_burst_of_port_0_listeners_and_connections(tmp_path: Path) -> None:
    """Thousands of sockets bound to port 0 after the layout is written leave every port free."""
    lay = write_layout(plan_devnet(DevnetPlan(nodes=16, seed=b"ports"), genesis_time_ms=T0), tmp_path / "dn")
    ports = _ports(lay)
    assert len(set(ports)) == len(ports) == 32
    listener = socket.socket()
    clients: list[socket.socket] = []
    try:
        listener.bind((layout.HOST, 0))
        listener.listen(4096)
        for i in range(6_000):  # what other programs take from the kernel meanwhile
            other = socket.socket()
            clients.append(other)
            if i % 3:
                other.bind((layout.HOST, 0))  # a listener on port 0, as every test transport
            else:
                other.connect(listener.getsockname())  # an outgoing connection
        for port in ports:
            check_port_free(layout.HOST, port, what=f"port {port}")  # raises ConfigError when taken
    finally:
        for client in clients:
            client.close()
        listener.close()


def test_no_port_is_handed_out_twice_while_reserved(tmp_path: Path) -> None:
    """Two devnets laid out back to back (as two test runs at once) share no port."""
    a = write_layout(plan_devnet(DevnetPlan(nodes=8, seed=b"a"), genesis_time_ms=T0), tmp_path / "a")
    b = write_layout(plan_devnet(DevnetPlan(nodes=8, seed=b"b"), genesis_time_ms=T0), tmp_path / "b")
    assert not set(_ports(a)) & set(_ports(b))


def test_ports_lie_outside_the_kernels_ephemeral_range() -> None:
    low, high = layout.ephemeral_range()
    ports = layout.reserve_ports(10)
    assert all(not low <= p <= high for p in ports), (ports, low, high)
    assert all(1024 <= p < 65536 for p in ports)
