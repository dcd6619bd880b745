"""`depin-p2p`: the node runner's command line.

Every user mistake ends in one line on stderr and exit status 2; only a
broken invariant of ours (InternalError, or an unexpected exception) prints
a traceback.

The transaction commands (``transfer``, ``stake``, ``unstake``, ``device
register``) load the node key of the home, ask the node running there for
the account's next nonce (``GET /account/<key>``), sign, and submit through
``POST /tx``; ``--wait`` then polls ``GET /tx/<id>`` until an epoch commits
the transaction. Amounts are tokens with at most 6 decimals, sent as
integer micro-units.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from depin_p2p import __version__, wire
from depin_p2p.crypto import (
    KeyPair,
    Passphrase,
    address_from_public_key,
    key_file_is_encrypted,
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
EXIT_TX_FAILED = 1  # --wait: the epoch skipped the transaction, or it did not commit in time
MICRO_PER_TOKEN = 1_000_000
U64_MAX = 2**64 - 1
WAIT_POLL_S = 0.5
EXIT_INTERRUPTED = 130
API_TIMEOUT_S = 5.0  # one request to the local node API

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

if TYPE_CHECKING:
    from depin_p2p.home import InitResult
    from depin_p2p.node import Node


def cmd_keygen(args: argparse.Namespace) -> int:
    key = KeyPair.generate()
    out: Path = args.out
    if out.exists() and not args.force:
        raise ConfigError(f"key file {out} already exists; use --force to overwrite it")
    source = passphrase_option(args)
    if args.encrypt and source is None:
        source = _typed_passphrase()
    elif source is not None and not args.encrypt:
        raise ConfigError("--passphrase-file/--passphrase-env need --encrypt")
    write_key_file(out, key, force=args.force, passphrase=None if source is None else source())
    doc = {"file": str(out), "address": key.address, "peer_id": key.peer_id, "encrypted": args.encrypt}
    if args.json:
        print(json.dumps(doc))
    else:
        print(f"wrote {out}{' (encrypted)' if args.encrypt else ''}")
        print(f"address: {key.address}")
        print(f"peer id: {key.peer_id}")
    return 0


def passphrase_option(args: argparse.Namespace) -> Passphrase | None:
    """The passphrase named by ``--passphrase-file``/``--passphrase-env`` (read when asked), or None."""
    from depin_p2p.config import read_passphrase  # noqa: PLC0415

    file: Path | None = args.passphrase_file
    env: str | None = args.passphrase_env
    if file is not None and env is not None:
        raise ConfigError("give --passphrase-file or --passphrase-env, not both")
    if file is None and env is None:
        return None
    where = "--passphrase-file" if file is not None else "--passphrase-env"
    return lambda: read_passphrase(file, env, where=where)


def _typed_passphrase() -> Passphrase:
    import getpass  # noqa: PLC0415

    if not sys.stdin.isatty():
        raise ConfigError(
            "--encrypt needs --passphrase-file FILE or --passphrase-env NAME (no terminal to ask)"
        )
    first = getpass.getpass("passphrase: ").encode()
    if first != getpass.getpass("again: ").encode():
        raise ConfigError("the two passphrases differ")
    return lambda: first


def _add_passphrase_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--passphrase-file", type=Path, metavar="FILE", help=f"{what}: the file holding the passphrase"
    )
    p.add_argument(
        "--passphrase-env", metavar="NAME", help=f"{what}: the environment variable holding the passphrase"
    )


def cmd_keyinfo(args: argparse.Namespace) -> int:
    key = load_key_file(args.key, passphrase_option(args))
    doc = {
        "file": str(args.key),
        "address": key.address,
        "peer_id": key.peer_id,
        "encrypted": key_file_is_encrypted(args.key),
    }
    if args.json:
        print(json.dumps(doc))
    else:
        print(f"address: {key.address}")
        print(f"peer id: {key.peer_id}")
    return 0


HOME_DATA = "data"  # as in depin_p2p.home, which this module does not import eagerly


def cmd_init(args: argparse.Namespace) -> int:
    import ipaddress  # noqa: PLC0415

    # Imported here so `keygen` and `--help` stay fast (no LMDB or trio import).
    from depin_p2p.home import init_home  # noqa: PLC0415
    from depin_p2p.ledger.genesis import (  # noqa: PLC0415
        MAX_START_LAG_EPOCHS,
        epochs_since_genesis,
        load_genesis,
    )

    source = passphrase_option(args)
    if args.bundle is not None:
        made, key = _init_from_bundle(args, None if source is None else source())
    elif args.genesis is None:
        raise ConfigError("init needs --genesis FILE (or --bundle FILE)")
    else:
        key = load_key_file(args.key, source) if args.key is not None else KeyPair.generate()
        made = init_home(
            args.home,
            genesis_file=args.genesis,
            key=key,
            force=args.force,
            config_toml=init_config_toml(args),
            passphrase=None if source is None else source(),
        )
    home, root = made.home, made.state_root
    if args.api_host is not None and not ipaddress.ip_address(args.api_host).is_loopback:
        _write_api_token(home)
    from depin_p2p.config import load_config  # noqa: PLC0415

    load_config(home)  # what `run` will check first: fail now, not at the first start
    lag = epochs_since_genesis(load_genesis(home / "genesis.json"), _wall_ms())
    if lag > MAX_START_LAG_EPOCHS:
        print(
            f"depin-p2p: note: the genesis time is {lag} epochs in the past: `run` starts this home "
            "only with bootstrap peers of the running network to catch up from",
            file=sys.stderr,
        )
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


def _init_from_bundle(args: argparse.Namespace, passphrase: bytes | None) -> tuple[InitResult, KeyPair]:
    """``init --bundle``: the home of an exported node (its key, devices, genesis and node.toml)."""
    import tempfile  # noqa: PLC0415

    from depin_p2p.bundle import genesis_file_of, read_bundle  # noqa: PLC0415
    from depin_p2p.config import render_config  # noqa: PLC0415
    from depin_p2p.home import init_home  # noqa: PLC0415

    extra = [
        f"--{name.replace('_', '-')}"
        for name in ("genesis", "key", "listen", "api_host", "api_port")
        if getattr(args, name) is not None
    ] + [f"--{name}" for name in ("bootstrap", "announce") if getattr(args, name)]
    if extra:
        raise ConfigError(f"--bundle brings its own genesis, key and node.toml: drop {', '.join(extra)}")
    bundle = read_bundle(args.bundle)
    toml = bundle.node_toml
    if _key_settings(args):  # the one setting a runner adds: where the passphrase is
        toml = render_config({"key": _key_settings(args)}, template=toml)
    with tempfile.TemporaryDirectory(prefix="depin-bundle-") as tmp:
        genesis = genesis_file_of(bundle, Path(tmp))
        made = init_home(
            args.home,
            genesis_file=genesis,
            key=bundle.key,
            force=args.force,
            config_toml=toml,
            passphrase=passphrase,
        )
    for rel, device_key in bundle.device_keys.items():
        (args.home / rel).parent.mkdir(parents=True, exist_ok=True)
        write_key_file(args.home / rel, device_key, force=True)
    return made, bundle.key


def _key_settings(args: argparse.Namespace) -> dict[str, object]:
    if args.passphrase_file is not None:
        return {"passphrase_file": str(args.passphrase_file.resolve())}
    if args.passphrase_env is not None:
        return {"passphrase_env": args.passphrase_env}
    return {}


def init_config_toml(args: argparse.Namespace) -> str | None:
    """node.toml for ``init``'s options (None: the documented defaults); ConfigError on a bad one."""
    import ipaddress  # noqa: PLC0415

    from depin_p2p.config import parse_multiaddr, render_config  # noqa: PLC0415

    settings: dict[str, dict[str, object]] = {}
    if _key_settings(args):
        settings["key"] = _key_settings(args)
    net: dict[str, object] = {}
    for i, addr in enumerate(args.bootstrap):
        parse_multiaddr(addr, where=f"--bootstrap #{i + 1}", need_peer_id=True)
    if args.bootstrap:
        net["bootstrap"] = list(args.bootstrap)
    if args.listen is not None:
        listen = parse_multiaddr(args.listen, where="--listen")
        if ipaddress.ip_address(listen.host).is_unspecified and not args.announce:
            raise ConfigError(
                f"--listen {args.listen} is every interface: give --announce ADDR (what peers dial)"
            )
        net["listen"] = args.listen
    for addr in args.announce:
        parse_multiaddr(addr, where="--announce")
    if args.announce:
        net["announce"] = list(args.announce)
    if net:
        settings["network"] = net
    api: dict[str, object] = {}
    if args.api_host is not None:
        try:
            api["host"] = str(ipaddress.ip_address(args.api_host))
        except ValueError:
            raise ConfigError(f"--api-host {args.api_host!r} is not an IP address") from None
    if args.api_port is not None:
        api["port"] = args.api_port
    if api:
        settings["api"] = api
    return render_config(settings) if settings else None


def _write_api_token(home: Path) -> Path:
    """A fresh bearer token in ``home/api.token`` (mode 0600), for an API opened beyond loopback."""
    import os  # noqa: PLC0415
    import secrets  # noqa: PLC0415

    from depin_p2p.config import API_TOKEN_BYTES  # noqa: PLC0415

    path = home / "api.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(API_TOKEN_BYTES) + "\n")
    return path


def cmd_balance(args: argparse.Namespace) -> int:
    account_id = public_key_from_address(args.address)
    if not args.prove:
        doc = _node_account(args.home, account_id)
        if doc is not None:
            return _print_node_balance(args, doc)
    return _balance_from_store(args, account_id)


def _node_account(home: Path, account_id: bytes) -> dict[str, Any] | None:
    """The running node's view of an account, or None when no node runs in ``home``."""
    try:
        status, doc = _ask_node(home, "GET", f"/account/{account_id.hex()}")
    except ConfigError:
        return None
    return doc if status == 200 else None


def _print_node_balance(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    balance, stake, unbonding = (
        int(doc.get("balance_micro", 0)),
        int(doc.get("stake_micro", 0)),
        int(doc.get("unbonding_micro", 0)),
    )
    result = {
        "address": address_from_public_key(public_key_from_address(args.address)),
        "exists": bool(doc.get("exists")),
        "balance_micro": balance,
        "nonce": int(doc.get("nonce", 0)),
        "stake_micro": stake,
        "unbonding_micro": unbonding,
        "epoch": int(doc.get("epoch", 0)),
        "source": "node",
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"address: {result['address']}")
    print(f"balance: {tokens(balance)}{'' if result['exists'] else ' (no account)'}")
    print(f"stake:   {tokens(stake)} (unbonding {tokens(unbonding)})")
    print(f"nonce:   {result['nonce']}")
    print(f"epoch:   {result['epoch']}  (from the running node)")
    return 0


def _balance_from_store(args: argparse.Namespace, account_id: bytes) -> int:
    from depin_p2p.ledger import merkle  # noqa: PLC0415
    from depin_p2p.ledger.state import account_key  # noqa: PLC0415
    from depin_p2p.ledger.store import LedgerStore  # noqa: PLC0415

    with LedgerStore.open(args.home / HOME_DATA, readonly=True) as store, store.view() as view:
        account = view.get_account(account_id)
        meta = view.get_meta()
        root = view.state_root()
        proof = merkle.prove(view, account_key(account_id)) if args.prove else None
    result: dict[str, object] = {
        "address": address_from_public_key(account_id),
        "exists": account is not None,
        "balance_micro": 0 if account is None else account.balance,
        "nonce": 0 if account is None else account.nonce,
        "epoch": meta.epoch,
        "state_root": root.hex(),
        "source": "store",
    }
    if proof is not None:
        value = None if account is None else wire.encode(account)
        # The same check a light client does on the proof's bytes: no store access, only the root.
        encoded = wire.encode(proof)
        merkle.verify_proof_bytes(root, account_key(account_id), value, encoded)
        shown = {"bytes": len(encoded), "depth": proof.depth, "hex": encoded.hex(), "verified": True}
        result["proof"] = shown
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"address: {result['address']}")
    print(f"balance: {tokens(int(str(result['balance_micro'])))}{'' if account else ' (no account)'}")
    print(f"nonce:   {result['nonce']}")
    print(f"epoch:   {meta.epoch}  state root: {root.hex()}")
    if proof is not None:
        kind = "inclusion" if account is not None else "exclusion"
        size = len(wire.encode(proof))
        print(f"proof:   {kind} proof verified against the state root ({size} bytes, depth {proof.depth})")
        print(f"  {wire.encode(proof).hex()}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import trio  # noqa: PLC0415

    from depin_p2p.config import load_config  # noqa: PLC0415
    from depin_p2p.logs import close_log_files, configure_logging  # noqa: PLC0415
    from depin_p2p.node import Node, run_until_signalled  # noqa: PLC0415

    config = load_config(args.home)
    node = Node(config)
    _check_can_start(node)
    node.check_ports()
    # After importing libp2p (node.py does), which resets its logger on import.
    configure_logging(fmt=config.log_format, level=config.log_level, file=config.log_file)
    try:
        trio.run(run_until_signalled, node)
    finally:
        close_log_files()
    return 0


def _wall_ms() -> int:
    import time  # noqa: PLC0415

    return int(time.time() * 1000)


def _check_can_start(node: Node) -> None:
    """``genesis.check_can_start`` against the home's ledger, before the node starts."""
    from depin_p2p.ledger.genesis import check_can_start  # noqa: PLC0415
    from depin_p2p.ledger.store import LedgerStore  # noqa: PLC0415

    data = node.config.data_dir
    if not (data / "data.mdb").exists():
        return  # the node's own start reports a missing ledger
    try:
        with LedgerStore.open(data, readonly=True) as store:
            last = store.last_epoch()
    except StorageError as exc:
        raise ConfigError(str(exc)) from None
    check_can_start(
        node.genesis, now_ms=_wall_ms(), last_epoch=last, bootstrap_peers=len(node.config.bootstrap)
    )


def _api_endpoint(home: Path) -> tuple[str, int, str | None]:
    """Where the node of ``home`` serves its API (host, port) and its bearer token, if it needs one."""
    import ipaddress  # noqa: PLC0415

    from depin_p2p.config import read_api_token  # noqa: PLC0415

    runtime = home / "run.json"
    try:
        doc = json.loads(runtime.read_text())
        port = int(doc["api_port"])
        host = str(doc.get("api_host") or "127.0.0.1")
        token_file = doc.get("api_token_file")
        if ipaddress.ip_address(host).is_unspecified:
            host = "127.0.0.1" if ipaddress.ip_address(host).version == 4 else "::1"
    except FileNotFoundError:
        raise ConfigError(f"no node has run in {home} (no {runtime})") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{runtime} is unreadable: {exc}") from None
    token = None if token_file is None else read_api_token(Path(token_file), where=str(runtime))
    return host, port, token


def _api_request(home: Path) -> tuple[int, dict[str, Any]]:
    """``request_json``'s port and keyword arguments to reach the node of ``home``."""
    import trio  # noqa: PLC0415

    host, port, token = _api_endpoint(home)

    async def connect(p: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, p)

    return port, {"token": token, "connect": None if host == "127.0.0.1" else connect}


def _ask_node(home: Path, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """One request to the node running in ``home``; ConfigError when it does not answer."""
    import trio  # noqa: PLC0415

    from depin_p2p.api import request_json  # noqa: PLC0415

    port, options = _api_request(home)
    try:
        return trio.run(partial(request_json, port, method, path, body, timeout=API_TIMEOUT_S, **options))
    except TimeoutError:
        raise ConfigError(
            f"the node in {home} did not answer {path} on port {port} within "
            f"{API_TIMEOUT_S:g} s (busy, stopped or stuck)"
        ) from None
    except (OSError, ValueError, TypeError):
        raise ConfigError(f"the node in {home} is not running (nothing answers on port {port})") from None


def cmd_status(args: argparse.Namespace) -> int:
    status, doc = _ask_node(args.home, "GET", "/status")
    if status != 200:
        raise ConfigError(f"the node in {args.home} answered /status with HTTP {status}")
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    for line in format_status(doc):
        print(line)
    return 0


def format_status(doc: dict[str, Any]) -> list[str]:
    """The ``/status`` document as a person reads it: tokens, dp addresses, no ``None``."""
    consensus = doc.get("consensus") or {}
    pending = doc.get("pending_proofs") or {}
    validators = doc.get("validators") or []
    running = consensus.get("running_epoch")
    instance = "no instance running"
    if running is not None:
        instance = f"running {running} (round {consensus.get('round', 0)})"
    lines = [
        f"network     {_shown(doc.get('network_id'))}   node {_shown(doc.get('address'))}",
        f"peer id     {_shown(doc.get('peer_id'))}   {plural(len(doc.get('peers') or []), 'peer')}",
        f"epoch       now {_shown(doc.get('epoch_now'))}   last committed {_shown(doc.get('last_epoch'))}"
        f"   {instance}",
        f"certificate {_shown(doc.get('last_certificate'))}",
        f"state root  {_shown(doc.get('state_root'))}",
        f"supply      {_tokens_of(doc.get('total_supply_micro'))}",
        f"balance     {_tokens_of(doc.get('balance_micro'))}",
        f"validators  {plural(len(validators), 'validator')}",
    ]
    lines += [f"  {_shown(v.get('address'))}  {_tokens_of(v.get('power_micro'))}" for v in validators]
    sync = doc.get("sync")
    if isinstance(sync, dict):
        lines.append(f"sync        {format_sync(sync)}")
    lines.append(
        f"proofs      pending {plural(int(pending.get('beacons') or 0), 'beacon')}, "
        f"{plural(int(pending.get('reports') or 0), 'report')}, "
        f"{plural(int(pending.get('attestations') or 0), 'attestation')}; "
        f"{int(pending.get('dropped') or 0)} dropped"
    )
    return lines


def format_sync(sync: dict[str, Any]) -> str:
    """``12 epochs behind, catching up at 2.5 epochs/s, ETA 6 s``, or ``up to date``."""
    behind = int(sync.get("behind") or 0)
    if not sync.get("syncing"):
        return "up to date" if behind == 0 else f"following ({plural(behind, 'epoch')} to decide)"
    rate, eta = sync.get("rate_epochs_per_s"), sync.get("eta_s")
    text = f"{plural(behind, 'epoch')} behind"
    text += ", rate unknown yet" if rate is None else f", catching up at {rate:g} epochs/s"
    if rate is not None:
        text += ", ETA unknown (not gaining)" if eta is None else f", ETA {duration_s(float(eta))}"
    return text


def duration_s(seconds: float) -> str:
    """``45 s``, ``3 min 20 s``, ``2 h 5 min``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _shown(value: object) -> str:
    return "-" if value is None else str(value)


def _tokens_of(micro: object) -> str:
    return "-" if not isinstance(micro, int) else tokens(micro)


def plural(n: int, word: str) -> str:
    """``1 peer``, ``0 peers``, ``2 peers``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def tokens(micro: int) -> str:
    """Micro-units as a person reads them: ``1.5 tokens``, ``1 token``."""
    return f"{format_amount(micro)} {'token' if micro == MICRO_PER_TOKEN else 'tokens'}"


def parse_amount(text: str) -> int:
    """Tokens with at most 6 decimals (``"1.5"``) as integer micro-units; ConfigError otherwise."""
    match = re.fullmatch(r"(\d+)(?:\.(\d{1,6}))?", text)
    if match is None:
        raise ConfigError(
            f"amount {text!r}: give a positive number of tokens with at most 6 decimals (e.g. 1.5)"
        )
    micro = int(match[1]) * MICRO_PER_TOKEN + int((match[2] or "0").ljust(6, "0"))
    if micro == 0:
        raise ConfigError(f"amount {text!r}: must be more than 0")
    if micro > U64_MAX:
        raise ConfigError(f"amount {text!r}: more than the ledger can hold")
    return micro


def format_amount(micro: int) -> str:
    """Micro-units as tokens, e.g. ``1500000`` -> ``1.5``."""
    whole, frac = divmod(micro, MICRO_PER_TOKEN)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".")


def _check_tx_options(args: argparse.Namespace) -> None:
    """The options every tx command shares, checked before anything is asked or sent."""
    timeout = args.timeout
    if not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"--timeout {args.timeout:g}: give a positive, finite number of seconds")


def _check_funds(args: argparse.Namespace, account: dict[str, Any], spend: tuple[str, int] | None) -> None:
    """Refuse (without --force) to spend more than the node knows the account holds.

    The ledger would skip such a transaction (``insufficient_balance``) and
    still use its nonce; a runner who means it says ``--force``.
    """
    if spend is None or args.force:
        return
    field, amount = spend
    held = int(account.get(f"{field}_micro", 0))
    if amount > held:
        what = "bonded stake" if field == "stake" else "balance"
        raise ConfigError(
            f"{tokens(amount)} is more than the {what} of {tokens(held)} "
            f"the node knows for {account.get('address', 'this account')}; the ledger would skip it and "
            "still use a nonce (add --force to send it anyway)"
        )


def _submit(
    args: argparse.Namespace,
    make_tx: Callable[[int, KeyPair, str], object],
    spend: tuple[str, int] | None = None,
) -> int:
    """Sign ``make_tx(next nonce, node key, network id)`` with the home's key; submit to its node.

    ``spend`` is (account field, micro-units) the transaction takes from: more
    than the node's figure is refused unless ``--force``. Every argument is
    checked before the transaction is submitted (the only side effect).
    """
    from depin_p2p.config import load_config, load_node_key  # noqa: PLC0415

    _check_tx_options(args)
    config = load_config(args.home)
    key = load_node_key(config)
    status, node = _ask_node(args.home, "GET", "/status")
    if status != 200:
        raise ConfigError(f"the node in {args.home} answered /status with HTTP {status}")
    status, account = _ask_node(args.home, "GET", f"/account/{key.public_key.hex()}")
    if status != 200 or not account.get("exists"):
        raise ConfigError(f"account {key.address} does not exist on this network (fund it first)")
    _check_funds(args, account, spend)
    nonce = int(account.get("next_nonce", account["nonce"]))
    network_id = str(node["network_id"])
    env = wire.seal(make_tx(nonce, key, network_id), key, network_id)
    status, answer = _ask_node(args.home, "POST", "/tx", wire.encode(env))
    if status != 202:
        raise ConfigError(
            f"the node refused the transaction: {answer.get('error')} {answer.get('detail', '')}"
        )
    tx_id = str(answer["tx_id"])
    result: dict[str, Any] = {"tx_id": tx_id, "nonce": nonce, "status": "pending"}
    if not args.json:
        print(f"submitted tx {tx_id} (nonce {nonce})")
    if not args.wait:
        if args.json:
            print(json.dumps(result))
        return 0
    done = _wait_committed(args.home, tx_id, args.timeout)
    result.update(done)
    code = done.get("code")
    if args.json:
        print(json.dumps(result))
    elif done.get("status") == "committed":
        outcome = "applied" if code is None else f"skipped ({code})"
        print(f"committed in epoch {done.get('epoch')}: {outcome}")
    if done.get("status") != "committed":
        print(f"depin-p2p: tx {tx_id} not committed within {args.timeout:g} s", file=sys.stderr)
        return EXIT_TX_FAILED
    if code is not None:
        print(f"depin-p2p: tx {tx_id} was skipped by the ledger: {code}", file=sys.stderr)
        return EXIT_TX_FAILED
    return 0


def _wait_committed(home: Path, tx_id: str, timeout: float) -> dict[str, Any]:
    """Poll ``GET /tx/<id>`` until committed or ``timeout`` seconds; return the last answer."""
    import trio  # noqa: PLC0415

    from depin_p2p.api import request_json  # noqa: PLC0415

    port, options = _api_request(home)

    async def poll() -> dict[str, Any]:
        last: dict[str, Any] = {"status": "unknown"}
        with trio.move_on_after(timeout):
            while True:
                status, doc = await request_json(port, "GET", f"/tx/{tx_id}", **options)
                if status == 200:
                    last = doc
                    if doc.get("status") == "committed":
                        break
                await trio.sleep(WAIT_POLL_S)
        return last

    try:
        return trio.run(poll)
    except (OSError, TimeoutError, ValueError, TypeError):
        raise ConfigError(f"the node in {home} stopped answering while waiting for tx {tx_id}") from None


def cmd_transfer(args: argparse.Namespace) -> int:
    from depin_p2p.ledger.state import Transfer  # noqa: PLC0415

    to = public_key_from_address(args.to)
    amount = parse_amount(args.amount)
    return _submit(args, lambda nonce, key, net: Transfer(nonce, to, amount), ("balance", amount))


def cmd_stake(args: argparse.Namespace) -> int:
    from depin_p2p.ledger.state import Stake, Unstake  # noqa: PLC0415

    amount = parse_amount(args.amount)
    cls, field = (Unstake, "stake") if args.command == "unstake" else (Stake, "balance")
    return _submit(args, lambda nonce, key, net: cls(nonce, amount), (field, amount))


DEFAULT_FREQUENCY_HZ = 868_100_000  # EU868 channel 1
DEFAULT_TX_POWER_CDBM = 2_700  # 27 dBm
DEFAULT_GAIN_CDBI = 300  # 3 dBi


def cmd_device_register(args: argparse.Namespace) -> int:
    from depin_p2p.ledger.state import RegisterDevice, sign_device_binding  # noqa: PLC0415
    from depin_p2p.model import Device, DeviceKind, validate_device  # noqa: PLC0415

    device_key = load_key_file(args.device_key)
    radio = args.kind == "radio"
    location = 0
    if radio:
        if args.location is None:
            raise ConfigError("a radio device needs --location (an H3 cell of resolution 12, in hex)")
        try:
            location = int(args.location, 16)
        except ValueError:
            raise ConfigError(f"--location {args.location!r} is not an H3 cell in hex") from None
    elif args.location is not None or args.frequency_hz is not None:
        raise ConfigError("a compute device has no --location or radio parameters")

    def make(nonce: int, key: KeyPair, network_id: str) -> RegisterDevice:
        device = Device(
            device_id=device_key.public_key,
            owner=key.public_key,
            kind=DeviceKind.RADIO if radio else DeviceKind.COMPUTE,
            location=location,
            frequency_hz=(args.frequency_hz or DEFAULT_FREQUENCY_HZ) if radio else 0,
            tx_power_cdbm=_or(args.tx_power_cdbm, DEFAULT_TX_POWER_CDBM) if radio else 0,
            gain_cdbi=_or(args.gain_cdbi, DEFAULT_GAIN_CDBI) if radio else 0,
            capacity=0 if radio else _or(args.capacity, 1),
            registered_epoch=0,
        )
        validate_device(device)  # the ledger's own bounds: fail here, not after an epoch
        return RegisterDevice(
            nonce=nonce,
            device_id=device.device_id,
            kind=device.kind,
            location=device.location,
            frequency_hz=device.frequency_hz,
            tx_power_cdbm=device.tx_power_cdbm,
            gain_cdbi=device.gain_cdbi,
            capacity=device.capacity,
            device_signature=sign_device_binding(device_key, key.public_key, network_id),
        )

    return _submit(args, make)


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def cmd_peers(args: argparse.Namespace) -> int:
    status, doc = _ask_node(args.home, "GET", "/status")
    if status != 200:
        raise ConfigError(f"the node in {args.home} answered /status with HTTP {status}")
    result = {
        "peer_id": doc.get("peer_id"),
        "listen": doc.get("listen", []),
        "peers": doc.get("peers", []),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"this node  {result['peer_id']}")
    for addr in result["listen"]:
        print(f"listening  {addr}")
    print(f"{plural(len(result['peers']), 'peer')} connected")
    for peer in result["peers"]:
        print(f"  {peer}")
    return 0


def _add_force_option(p: argparse.ArgumentParser, what: str) -> None:
    help_text = f"send even if AMOUNT exceeds the {what} the node knows"
    p.add_argument("--force", action="store_true", help=help_text)


def _add_tx_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", type=Path, required=True, metavar="DIR", help="the home of the running node")
    p.add_argument("--wait", action="store_true", help="wait until an epoch commits it; print the outcome")
    p.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="how long --wait waits (default 60 s)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


class _Parser(argparse.ArgumentParser):
    """No abbreviated long options (``--hom`` is not ``--home``); subcommands inherit the class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    keygen.add_argument(
        "--encrypt",
        action="store_true",
        help="encrypt the key with a passphrase (Argon2id + XSalsa20-Poly1305); the passphrase comes "
        "from --passphrase-file or --passphrase-env, or is typed on the terminal, never an argument",
    )
    _add_passphrase_options(keygen, "--encrypt")
    keygen.add_argument("--json", action="store_true", help="print the result as JSON")
    keygen.set_defaults(handler=cmd_keygen)

    keyinfo = sub.add_parser(
        "keyinfo",
        help="show the address and peer id of a key file",
        description="Check a key file and print its node address and libp2p peer id.",
    )
    keyinfo.add_argument("key", type=Path, metavar="FILE", help="the key file")
    _add_passphrase_options(keyinfo, "an encrypted key")
    keyinfo.add_argument("--json", action="store_true", help="print the result as JSON")
    keyinfo.set_defaults(handler=cmd_keyinfo)

    init = sub.add_parser(
        "init",
        help="create a node home from a genesis file",
        description="Create DIR with the node key, a copy of the genesis file, node.toml and an LMDB "
        "ledger holding the genesis state; from --genesis and the options below, or from a --bundle.",
    )
    init.add_argument("--home", type=Path, required=True, metavar="DIR", help="the node home to create")
    init.add_argument("--genesis", type=Path, metavar="FILE", help="genesis JSON file")
    init.add_argument(
        "--bundle",
        type=Path,
        metavar="FILE",
        help="a node bundle from `depin-devnet export` (key, devices, genesis, node.toml) instead of "
        "--genesis and the network options",
    )
    init.add_argument("--key", type=Path, metavar="FILE", help="node key file to copy (default: generate)")
    _add_passphrase_options(
        init,
        "store the home's key encrypted (and decrypt --key) with this passphrase; node.toml names "
        "the same file or variable for `run`",
    )
    init.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="MULTIADDR",
        help="a peer of the network to join, /ip4/A/tcp/P/p2p/<peer id> (repeatable)",
    )
    init.add_argument(
        "--listen",
        metavar="MULTIADDR",
        help="where to listen, e.g. /ip4/0.0.0.0/tcp/4001 (default: 127.0.0.1)",
    )
    init.add_argument(
        "--announce",
        action="append",
        default=[],
        metavar="MULTIADDR",
        help="an address peers can dial, /ip4/A/tcp/P, handed out to peers (repeatable)",
    )
    init.add_argument(
        "--api-host",
        metavar="IP",
        help="open the HTTP API on this address (default 127.0.0.1); any other writes DIR/api.token, "
        "the bearer token every request then needs",
    )
    init.add_argument(
        "--api-port", type=int, metavar="PORT", help="the HTTP API port (default: any free one)"
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing home")
    init.add_argument("--json", action="store_true", help="print the result as JSON")
    init.set_defaults(handler=cmd_init)

    balance = sub.add_parser(
        "balance",
        help="show an account's balance",
        description="Ask the node running in the home for an account's balance, nonce and stake; "
        "when no node runs there, or with --prove, read the home's ledger directly (read-only, "
        "safe beside a running node): --prove also prints the account's Merkle branch and checks "
        "it against the stored state root.",
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
    _add_tx_parsers(sub)
    return parser


def _add_tx_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    """The node runner's transaction commands and ``peers``."""
    transfer = sub.add_parser(
        "transfer",
        help="send tokens to an address",
        description="Sign a transfer with the node key and submit it through the running node.",
    )
    transfer.add_argument("to", metavar="TO_ADDRESS", help="the receiving address (dp...)")
    transfer.add_argument("amount", metavar="AMOUNT", help="tokens, at most 6 decimals (e.g. 1.5)")
    _add_force_option(transfer, "balance")
    _add_tx_options(transfer)
    transfer.set_defaults(handler=cmd_transfer)

    for name, text in (
        ("stake", "bond tokens from the balance as validator stake (power from the next epoch)"),
        ("unstake", "unbond stake: power drops now, the tokens return after the unbonding epochs"),
    ):
        p = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}.")
        p.add_argument("amount", metavar="AMOUNT", help="tokens, at most 6 decimals (e.g. 1.5)")
        _add_force_option(p, "bonded stake" if name == "unstake" else "balance")
        _add_tx_options(p)
        p.set_defaults(handler=cmd_stake)

    device = sub.add_parser("device", help="manage devices", description="Manage this node's devices.")
    device_sub = device.add_subparsers(dest="device_command", metavar="COMMAND", required=True)
    register = device_sub.add_parser(
        "register",
        help="register a device to this node's account",
        description="Register the device whose key is FILE to the node's account; the device key "
        "signs the binding. Radio devices need --location; compute devices take --capacity.",
    )
    register.add_argument("--device-key", type=Path, required=True, metavar="FILE", help="device key file")
    register.add_argument("--kind", choices=("radio", "compute"), required=True, help="device kind")
    register.add_argument("--location", metavar="H3", help="radio: H3 cell of resolution 12, in hex")
    register.add_argument(
        "--frequency-hz",
        type=int,
        metavar="HZ",
        help=f"radio: centre frequency (default {DEFAULT_FREQUENCY_HZ})",
    )
    register.add_argument(
        "--tx-power-cdbm", type=int, metavar="N", help=f"radio: centi-dBm (default {DEFAULT_TX_POWER_CDBM})"
    )
    register.add_argument(
        "--gain-cdbi",
        type=int,
        metavar="N",
        help=f"radio: antenna gain, centi-dBi (default {DEFAULT_GAIN_CDBI})",
    )
    register.add_argument("--capacity", type=int, metavar="N", help="compute: capacity units (default 1)")
    _add_tx_options(register)
    register.set_defaults(handler=cmd_device_register)

    peers = sub.add_parser(
        "peers",
        help="list the running node's peers",
        description="Ask the node running in a home for its peer id, listen addresses and connected peers.",
    )
    peers.add_argument("--home", type=Path, required=True, metavar="DIR", help="the node home")
    peers.add_argument("--json", action="store_true", help="print the result as JSON")
    peers.set_defaults(handler=cmd_peers)

    from depin_p2p.cli_genesis import add_genesis_parser  # noqa: PLC0415

    add_genesis_parser(sub)


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
