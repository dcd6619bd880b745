"""Holding the local API (issue 12, item 3), through the real HTTP server on 127.0.0.1.

An attacker on the host opens connections and never finishes a request; a
normal client must still be answered at once, a trickled request head must be
cut at its deadline, and the command-line client must turn a node that accepts
and never answers into one line on stderr, not a traceback.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
from prometheus_client import CollectorRegistry

from depin_p2p.api import ApiServer, fetch_json

HELD = 300


def _status() -> dict[str, Any]:
    return {"epoch": 7}


async def _hold(port: int, held: list[trio.SocketStream], *, partial_head: bool) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    held.append(stream)
    if partial_head:
        await stream.send_all(b"GET /status HTTP/1.1\r\nhost: x\r\n")


async def test_300_held_connections_do_not_delay_a_normal_request() -> None:
    held: list[trio.SocketStream] = []
    server = ApiServer(status=_status, registry=CollectorRegistry())
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(server.run)
                # Half idle, half with a request head that never ends.
                for i in range(HELD):
                    await _hold(port, held, partial_head=i % 2 == 1)
                await trio.sleep(0.2)  # let the server accept them all
                assert len(held) == HELD
                for _ in range(3):
                    start = trio.current_time()
                    doc = await fetch_json(port, timeout=10.0)
                    elapsed = trio.current_time() - start
                    assert doc == {"epoch": 7}
                    assert elapsed < 1.0, f"a request behind {HELD} held connections took {elapsed:.2f} s"
                nursery.cancel_scope.cancel()
    finally:
        for stream in held:
            await stream.aclose()


async def _closed_after(stream: trio.SocketStream, trickle_every: float) -> float:
    """Trickle header lines until the server closes the connection; return the seconds it took."""
    start = trio.current_time()
    await stream.send_all(b"GET /status HTTP/1.1\r\nhost: x\r\n")
    i = 0
    while True:
        with trio.move_on_after(trickle_every):
            try:
                if await stream.receive_some(4096) == b"":
                    break
            except trio.BrokenResourceError:
                break
        try:
            await stream.send_all(f"x-slow-{i}: y\r\n".encode())
        except trio.BrokenResourceError:
            break
        i += 1
    return trio.current_time() - start


async def test_a_trickled_request_head_is_cut_at_its_deadline() -> None:
    server = ApiServer(status=_status, registry=CollectorRegistry())
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.run)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                elapsed = await _closed_after(stream, trickle_every=0.2)
            # The head deadline is 2 s from the accept: a local client sends its head at once.
            assert 1.5 <= elapsed < 3.5, f"slow-header connection closed after {elapsed:.2f} s"
            assert await fetch_json(port) == {"epoch": 7}
            nursery.cancel_scope.cancel()


def test_status_against_an_api_that_never_answers_is_one_line(tmp_path: Path) -> None:
    # A socket that completes the TCP handshake (the kernel backlog) and never answers.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        (tmp_path / "run.json").write_text(json.dumps({"api_port": port}))
        proc = subprocess.run(
            [sys.executable, "-m", "depin_p2p", "status", "--home", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        listener.close()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "did not answer" in lines[0] and str(port) in lines[0]
    assert proc.stdout == ""


async def test_the_devnet_poll_of_a_stuck_api_is_no_answer_not_a_crash(tmp_path: Path) -> None:
    # The supervisor polls /status with a 2 s timeout; a stuck API must read as "no answer yet",
    # never raise out of the poll (trio.TooSlowError did, and the supervisor stopped every node).
    from devnet.layout import NodeLayout  # noqa: PLC0415
    from devnet.runner import fetch_status  # noqa: PLC0415

    listener = trio.socket.socket()
    try:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        node = NodeLayout(index=0, home=tmp_path, p2p_port=1, api_port=port, peer_id="x", address="x")
        with trio.fail_after(20):
            assert await fetch_status(node) is None
    finally:
        listener.close()
