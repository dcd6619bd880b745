"""Peers on other machines can reconnect after a disconnect (issue 17).

A node that listens on ``0.0.0.0:4001`` (as a runner's node does, and every
node of the join test) tells its peers, through libp2p identify, that it
listens on ``/ip4/0.0.0.0/tcp/4001``; py-libp2p put that address in the
peerstore and the next dial to that peer tried it first: a connection to
port 4001 of the dialler's own machine, so to itself, and the security
handshake failed (the peer id is not the expected one). The first connection
worked, every later one failed, and a peer dropped once (for silence, say)
was lost for good. On 127.0.0.1 with a port per node it never showed.

Two network namespaces, each node on 0.0.0.0:4001; one connects and hangs up
8 times.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devnet import netns

pytestmark = pytest.mark.slow

CHILD = str(Path(__file__).with_name("redial_child.py"))
CYCLES = 8


@pytest.mark.skipif(netns.unavailable_reason() is not None, reason=str(netns.unavailable_reason()))
def test_a_peer_on_another_address_reconnects_after_each_hang_up() -> None:
    with netns.Mesh(2) as mesh:
        server = subprocess.Popen(
            [*mesh.exec_prefix(0), sys.executable, CHILD, "serve", "81"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=Path(__file__).parents[2],
        )
        try:
            assert server.stdout is not None
            peer_id = ""
            for line in server.stdout:  # its log lines come first; it prints PEER once it listens
                if line.startswith("PEER "):
                    peer_id = line.split()[1]
                    break
            assert peer_id, "the serving node exited before it listened"
            addr = f"/ip4/{netns.address(0)}/tcp/4001/p2p/{peer_id}"
            done = subprocess.run(
                [*mesh.exec_prefix(1), sys.executable, CHILD, "dial", "82", addr, str(CYCLES)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                cwd=Path(__file__).parents[2],
            )
        finally:
            server.kill()
            server.wait(10)
            if server.stdout is not None:
                server.stdout.close()
    assert done.returncode == 0, done.stderr[-2000:]
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert results == [f"RESULT ok {CYCLES} fail 0"], done.stderr[-2000:]
