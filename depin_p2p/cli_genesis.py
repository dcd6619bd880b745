"""``depin-p2p genesis fetch``: get a network's genesis from a peer and check it against a known hash."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from depin_p2p.errors import ConfigError, TransportError

HASH_HEX_CHARS = 64


def cmd_genesis_fetch(args: argparse.Namespace) -> int:
    # Imported here: `depin-p2p --help` stays fast.
    import trio  # noqa: PLC0415

    from depin_p2p.clock import Clock  # noqa: PLC0415
    from depin_p2p.config import parse_multiaddr  # noqa: PLC0415
    from depin_p2p.crypto import KeyPair  # noqa: PLC0415
    from depin_p2p.gossip.genesis_fetch import fetch_genesis  # noqa: PLC0415
    from depin_p2p.gossip.libp2p import Libp2pConfig, Libp2pTransport  # noqa: PLC0415
    from depin_p2p.ledger.genesis import parse_genesis  # noqa: PLC0415
    from depin_p2p.logs import configure_logging  # noqa: PLC0415

    # After importing libp2p (which resets its logger): on stderr, never stdout, and only our errors;
    # libp2p's own (each failed dial attempt) are what the one line of a failure says already.
    configure_logging(fmt="human", level="error")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.CRITICAL)

    addr = parse_multiaddr(args.from_addr, where="--from", need_peer_id=True)
    want = args.expect_hash.lower()
    if len(want) != HASH_HEX_CHARS or any(c not in "0123456789abcdef" for c in want):
        raise ConfigError(f"--expect-hash {args.expect_hash!r} is not {HASH_HEX_CHARS} hex digits")
    out: Path = args.out
    if out.exists() and not args.force:
        raise ConfigError(f"{out} already exists; use --force to overwrite it")

    async def fetch() -> bytes:
        # A throwaway identity: the server learns nothing about who asks.
        transport = Libp2pTransport(
            KeyPair.generate(),
            network_id="genesis-fetch",
            clock=Clock(),
            config=Libp2pConfig(listen_addr="/ip4/127.0.0.1/tcp/0"),
        )
        got: list[bytes | TransportError] = []
        with trio.fail_after(args.timeout + 10):  # the dial and the exchange, each bounded too
            async with trio.open_nursery() as nursery:
                await nursery.start(transport.run)
                try:
                    got.append(await fetch_genesis(transport, addr.text, timeout=args.timeout))
                except TransportError as exc:  # raised past the nursery: one error, not a group
                    got.append(exc)
                nursery.cancel_scope.cancel()
        if isinstance(got[0], TransportError):
            raise got[0]
        return got[0]

    try:
        data = trio.run(fetch)
    except TransportError as exc:
        raise ConfigError(f"cannot fetch the genesis from {addr.text}: {exc}") from None
    except trio.TooSlowError:
        raise ConfigError(f"{addr.text} did not answer within {args.timeout + 10:g} s") from None
    try:
        genesis = parse_genesis(data.decode("utf-8"))
    except (UnicodeDecodeError, ConfigError) as exc:
        raise ConfigError(f"{addr.text} answered something that is not a genesis: {exc}") from None
    got = genesis.genesis_hash.hex()
    if got != want:
        raise ConfigError(
            f"the genesis from {addr.text} has hash {got}, not the expected {want}: refused, nothing written"
        )
    _write_atomically(out, data)
    result: dict[str, Any] = {"file": str(out), "network_id": genesis.network_id, "genesis_hash": got}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"wrote {out}: network {genesis.network_id}, genesis hash {got} (as expected)")
    return 0


def _write_atomically(path: Path, data: bytes) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def add_genesis_parser(sub: Any) -> None:
    """``genesis fetch`` on the ``depin-p2p`` sub-command parser."""
    genesis = sub.add_parser("genesis", help="get a network's genesis", description="Genesis files.")
    genesis_sub = genesis.add_subparsers(dest="genesis_command", metavar="COMMAND", required=True)
    fetch = genesis_sub.add_parser(
        "fetch",
        help="fetch the genesis from a peer and check its hash",
        description="Ask the peer at MULTIADDR for its genesis file (libp2p protocol /depin/genesis/1), "
        "check that its hash is the one you were given, and only then write it to FILE. A wrong hash "
        "writes nothing and exits 2.",
    )
    fetch.add_argument(
        "--from", dest="from_addr", required=True, metavar="MULTIADDR", help="/ip4/A/tcp/P/p2p/<peer id>"
    )
    fetch.add_argument(
        "--expect-hash", required=True, metavar="HEX", help="the genesis hash (init and export print it)"
    )
    fetch.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the genesis")
    fetch.add_argument("--force", action="store_true", help="overwrite an existing FILE")
    fetch.add_argument("--timeout", type=float, default=10.0, metavar="S", help="request timeout (10 s)")
    fetch.add_argument("--json", action="store_true", help="print the result as JSON")
    fetch.set_defaults(handler=cmd_genesis_fetch)
