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

from depin_p2p import __version__, wire
from depin_p2p.crypto import (
    KeyPair,
    address_from_public_key,
    load_key_file,
    public_key_from_address,
    write_key_file,
)
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


HOME_DATA = "data"  # as in depin_p2p.home, which this module does not import eagerly


def cmd_init(args: argparse.Namespace) -> int:
    # Imported here so `keygen` and `--help` stay fast (no LMDB or trio import).
    from depin_p2p.home import init_home  # noqa: PLC0415

    key = load_key_file(args.key) if args.key is not None else KeyPair.generate()
    made = init_home(args.home, genesis_file=args.genesis, key=key, force=args.force)
    home, root = made.home, made.state_root
    result = {
        "home": str(home),
        "address": key.address,
        "peer_id": key.peer_id,
        "network_id": made.network_id,
        "genesis_hash": made.genesis_hash.hex(),
        "state_root": root.hex(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"initialized {home} for network {made.network_id}")
        print(f"address:    {key.address}")
        print(f"state root: {root.hex()}")
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    from depin_p2p.ledger import merkle  # noqa: PLC0415
    from depin_p2p.ledger.state import account_key  # noqa: PLC0415
    from depin_p2p.ledger.store import LedgerStore  # noqa: PLC0415

    account_id = public_key_from_address(args.address)
    with LedgerStore.open(args.home / HOME_DATA, readonly=True) as store, store.view() as view:
        account = view.get_account(account_id)
        meta = view.get_meta()
        root = view.state_root()
        proof = merkle.prove(view, account_key(account_id)) if args.prove else None
    result: dict[str, object] = {
        "address": address_from_public_key(account_id),
        "exists": account is not None,
        "balance": 0 if account is None else account.balance,
        "nonce": 0 if account is None else account.nonce,
        "epoch": meta.epoch,
        "state_root": root.hex(),
    }
    if proof is not None:
        value = None if account is None else wire.encode(account)
        # The same check a light client does: no store access, only the root.
        merkle.verify_proof(root, account_key(account_id), value, proof)
        result["proof"] = {
            "key": proof.key.hex(),
            "value": None if value is None else value.hex(),
            "bucket": merkle.bucket_of(proof.key),
            "bucket_others": [[e.key.hex(), e.value_hash.hex()] for e in proof.others],
            "siblings": [s.hex() for s in proof.siblings],
            "verified": True,
        }
    if args.json:
        print(json.dumps(result))
        return 0
    whole, frac = divmod(int(str(result["balance"])), 1_000_000)
    print(f"address: {result['address']}")
    print(f"balance: {result['balance']} micro ({whole}.{frac:06d}){'' if account else ' (no account)'}")
    print(f"nonce:   {result['nonce']}")
    print(f"epoch:   {meta.epoch}  state root: {root.hex()}")
    if proof is not None:
        kind = "inclusion" if account is not None else "exclusion"
        print(f"proof:   {kind} proof verified against the state root")
        print(f"  bucket {merkle.bucket_of(proof.key)} with {len(proof.others)} other entries")
        for height, sibling in enumerate(proof.siblings):
            print(f"  sibling[{height:2d}] {sibling.hex()}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import trio  # noqa: PLC0415

    from depin_p2p.config import load_config  # noqa: PLC0415
    from depin_p2p.logs import close_log_files, configure_logging  # noqa: PLC0415
    from depin_p2p.node import Node, run_until_signalled  # noqa: PLC0415

    config = load_config(args.home)
    node = Node(config)
    node.check_ports()
    # After importing libp2p (node.py does), which resets its logger on import.
    configure_logging(fmt=config.log_format, level=config.log_level, file=config.log_file)
    try:
        trio.run(run_until_signalled, node)
    finally:
        close_log_files()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import trio  # noqa: PLC0415

    from depin_p2p.api import fetch_json  # noqa: PLC0415

    runtime = args.home / "run.json"
    try:
        port = int(json.loads(runtime.read_text())["api_port"])
    except FileNotFoundError:
        raise ConfigError(f"no node has run in {args.home} (no {runtime})") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{runtime} is unreadable: {exc}") from None
    try:
        doc = trio.run(fetch_json, port)
    except (OSError, TimeoutError, ValueError, TypeError):
        raise ConfigError(
            f"the node in {args.home} is not running (nothing answers on 127.0.0.1:{port})"
        ) from None
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    consensus = doc.get("consensus", {})
    pending = doc.get("pending_proofs", {})
    print(f"network     {doc.get('network_id')}   node {doc.get('address')}")
    print(f"peer id     {doc.get('peer_id')}   peers {len(doc.get('peers', []))}")
    print(
        f"epoch       now {doc.get('epoch_now')}   last committed {doc.get('last_epoch')}"
        f"   running {consensus.get('running_epoch')} (round {consensus.get('round')})"
    )
    print(f"certificate {doc.get('last_certificate')}")
    print(f"state root  {doc.get('state_root')}   supply {doc.get('total_supply')}")
    print(f"balance     {doc.get('balance')} micro   validators {len(doc.get('validators', []))}")
    print(
        f"proofs      pending beacons {pending.get('beacons')} reports {pending.get('reports')}"
        f" attestations {pending.get('attestations')}   dropped {pending.get('dropped')}"
    )
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

    init = sub.add_parser(
        "init",
        help="create a node home from a genesis file",
        description="Create DIR with the node key, a copy of the genesis file and an LMDB ledger "
        "holding the genesis state.",
    )
    init.add_argument("--home", type=Path, required=True, metavar="DIR", help="the node home to create")
    init.add_argument("--genesis", type=Path, required=True, metavar="FILE", help="genesis JSON file")
    init.add_argument("--key", type=Path, metavar="FILE", help="node key file to copy (default: generate)")
    init.add_argument("--force", action="store_true", help="overwrite an existing home")
    init.add_argument("--json", action="store_true", help="print the result as JSON")
    init.set_defaults(handler=cmd_init)

    balance = sub.add_parser(
        "balance",
        help="show an account's balance from the local ledger",
        description="Read an account from the node home's ledger; --prove also prints its Merkle "
        "branch and checks it against the stored state root.",
    )
    balance.add_argument("address", metavar="ADDRESS", help="account address (dp...)")
    balance.add_argument("--home", type=Path, required=True, metavar="DIR", help="the node home")
    balance.add_argument("--prove", action="store_true", help="print and check the Merkle proof")
    balance.add_argument("--json", action="store_true", help="print the result as JSON")
    balance.set_defaults(handler=cmd_balance)

    run_p = sub.add_parser(
        "run",
        help="run a node",
        description="Run the node of a home created by `init`: joins its bootstrap peers, catches up, "
        "witnesses with its devices and takes part in consensus, until SIGINT/SIGTERM.",
    )
    run_p.add_argument("--home", type=Path, required=True, metavar="DIR", help="the node home")
    run_p.set_defaults(handler=cmd_run)

    status = sub.add_parser(
        "status",
        help="show a running node's status",
        description="Ask the node running in a home for its status (epoch, peers, certificate, proofs).",
    )
    status.add_argument("--home", type=Path, required=True, metavar="DIR", help="the node home")
    status.add_argument("--json", action="store_true", help="print the full status document as JSON")
    status.set_defaults(handler=cmd_status)
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
    except BaseExceptionGroup as group:
        # trio nurseries wrap errors: a user error raised while starting a service arrives grouped.
        user, rest = group.split(USER_ERRORS)
        if user is None or rest is not None:
            raise
        print(f"depin-p2p: error: {_first_leaf(user)}", file=sys.stderr)
        return EXIT_USER_ERROR


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def main() -> None:
    """Console-script entry point."""
    try:
        sys.exit(run())
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error of ours.
        sys.stderr.close()
        sys.exit(0)
