"""The supervisor's status poll against a node that accepts and never answers (a stopped or busy node)."""

from __future__ import annotations

from pathlib import Path

import trio

from devnet.layout import NodeLayout
from devnet.runner import fetch_status


async def test_a_status_poll_that_times_out_is_none_not_an_exception() -> None:
    # A listener that accepts connections and never answers: what a SIGSTOPped node looks like.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    held: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        held.append(stream)
        await trio.sleep_forever()

    node = NodeLayout(0, Path("/nonexistent"), 0, port, "peer", "address")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, hold, listeners)
            assert await fetch_status(node) is None  # raised trio.TooSlowError before
            assert held  # it really connected and waited
            nursery.cancel_scope.cancel()
