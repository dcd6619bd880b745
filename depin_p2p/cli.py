"""`depin-p2p`: the node runner's command line.

Every user mistake ends in one line on stderr and exit status 2; only a
broken invariant of ours (InternalError, or an unexpected exception) prints
a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from depin_p2p import __version__
from depin_p2p.crypto import KeyPair, load_key_file, write_key_file
from depin_p2p.errors import (
    CodecError,
    ConfigError,
    ConsensusError,
    DepinError,
    InternalError,
    StorageError,
    TransportError,
    ValidationError,
)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# Errors that describe something the user can fix or must know; one line each.
USER_ERRORS: tuple[type[DepinError], ...] = (
    ConfigError,
    StorageError,
    TransportError,
    ValidationError,
    CodecError,
    ConsensusError,
)

Handler = Callable[[argparse.Namespace], int]


def cmd_keygen(args: argparse.Namespace) -> int:
    key = KeyPair.generate()
    out: Path = args.out
    write_key_file(out, key, force=args.force)
    if args.json:
        print(json.dumps({"file": str(out), "address": key.address, "peer_id": key.peer_id}))
    else:
        print(f"wrote {out}")
        print(f"address: {key.address}")
        print(f"peer id: {key.peer_id}")
    return 0


def cmd_keyinfo(args: argparse.Namespace) -> int:
    key = load_key_file(args.key)
    if args.json:
        print(json.dumps({"file": str(args.key), "address": key.address, "peer_id": key.peer_id}))
    else:
        print(f"address: {key.address}")
        print(f"peer id: {key.peer_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depin-p2p",
        description="A peer-to-peer node for DePIN devnets: signed device proofs over libp2p, "
        "cross-witnessing, per-epoch BFT consensus and an LMDB ledger.",
    )
    parser.add_argument("--version", action="version", version=f"depin-p2p {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    keygen = sub.add_parser(
        "keygen",
        help="create a node key file",
        description="Create an Ed25519 node key (mode 0600) and print its address and libp2p peer id.",
    )
    keygen.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the key")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing key file")
    keygen.add_argument("--json", action="store_true", help="print the result as JSON")
    keygen.set_defaults(handler=cmd_keygen)

    keyinfo = sub.add_parser(
        "keyinfo",
        help="show the address and peer id of a key file",
        description="Check a key file and print its node address and libp2p peer id.",
    )
    keyinfo.add_argument("key", type=Path, metavar="FILE", help="the key file")
    keyinfo.add_argument("--json", action="store_true", help="print the result as JSON")
    keyinfo.set_defaults(handler=cmd_keyinfo)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except InternalError:
        raise
    except USER_ERRORS as exc:
        print(f"depin-p2p: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
