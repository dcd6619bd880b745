"""`depin-devnet export`: a devnet to run on several machines, one bundle per node.

Writes ``DIR/genesis.json`` and ``DIR/node-<i>.bundle`` (mode 0600), each
holding node ``i``'s key, its devices' keys, the genesis and a ``node.toml``
with its listen and announce addresses and the bootstrap multiaddrs of the
seed nodes (the first ``--seeds``; a seed knows the other seeds). With
``--ip`` (one per node) node ``i`` listens on every interface at ``--port``
and announces ``/ip4/<ip i>/tcp/<port>``; its API stays on 127.0.0.1 at
``--api-port``. Without ``--ip`` every node is on 127.0.0.1 at ports reserved
now (one machine, several homes). On the target machine: ``depin-p2p init
--bundle node-<i>.bundle --home DIR``, then ``depin-p2p run --home DIR``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import time
from pathlib import Path
from typing import Any

from depin_p2p.bundle import Bundle, write_bundle
from depin_p2p.config import render_config
from depin_p2p.errors import ConfigError
from depin_p2p.ledger.genesis import parse_genesis
from devnet.genesis import DevnetPlan, plan_devnet, write_genesis
from devnet.layout import reserve_ports

DEFAULT_P2P_PORT = 4001
DEFAULT_API_PORT = 8080
DEFAULT_SEEDS = 2
DEFAULT_RADIOS = DevnetPlan().radios_per_node
DEFAULT_START_S = 60.0  # time to copy the bundles and start the nodes before epoch 1


def add_parser(sub: Any) -> None:
    """Register ``export`` on the ``depin-devnet`` sub-command parser."""
    p = sub.add_parser(
        "export",
        help="write a genesis and one node bundle per node, to run on several machines",
        description="Write DIR/genesis.json and DIR/node-<i>.bundle (mode 0600: keys inside): node i's key "
        "and devices, the genesis and a node.toml with its listen and announce addresses and the "
        "bootstrap multiaddrs of the seed nodes. Install one with `depin-p2p init --bundle FILE --home DIR`.",
        allow_abbrev=False,
    )
    p.add_argument("--dir", type=Path, required=True, help="where to write (absent or empty)")
    p.add_argument("--nodes", type=int, required=True, help="number of nodes")
    p.add_argument("--validators", type=int, default=None, help="how many nodes validate (default: all)")
    p.add_argument(
        "--ip",
        action="append",
        default=[],
        metavar="IP",
        help="node i's public address (give one per node, in order); default: all on 127.0.0.1",
    )
    p.add_argument("--port", type=int, default=DEFAULT_P2P_PORT, help="with --ip: the libp2p port (4001)")
    p.add_argument("--api-port", type=int, default=DEFAULT_API_PORT, help="with --ip: the API port (8080)")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="how many seed nodes others bootstrap to")
    p.add_argument("--epoch-seconds", type=float, default=10.0, help="epoch length (default 10)")
    p.add_argument(
        "--radios-per-node",
        type=int,
        default=DEFAULT_RADIOS,
        help=f"simulated radios per node (default {DEFAULT_RADIOS}; fewer: fewer proofs)",
    )
    p.add_argument(
        "--start-in", type=float, default=DEFAULT_START_S, help="seconds from now to the genesis time (60)"
    )
    p.add_argument("--seed", default=None, help="derive keys and placement from this seed (reproducible)")
    p.add_argument("--json", action="store_true", help="print the nodes as JSON")
    p.set_defaults(handler=cmd_export)


def _check(args: argparse.Namespace) -> list[str] | None:
    if args.nodes < 1:
        raise ConfigError("--nodes must be at least 1")
    if args.validators is not None and not 1 <= args.validators <= args.nodes:
        raise ConfigError(f"--validators must be between 1 and --nodes ({args.nodes})")
    if not 1 <= args.seeds <= args.nodes:
        raise ConfigError(f"--seeds must be between 1 and --nodes ({args.nodes})")
    if args.radios_per_node < 0:
        raise ConfigError("--radios-per-node must not be negative")
    if args.epoch_seconds <= 0 or args.start_in < 0:
        raise ConfigError("--epoch-seconds must be positive and --start-in not negative")
    for port in (args.port, args.api_port):
        if not 1 <= port <= 65535:
            raise ConfigError(f"port {port} is not a TCP port")
    if args.dir.exists() and (not args.dir.is_dir() or any(args.dir.iterdir())):
        raise ConfigError(f"--dir {args.dir} is not empty")
    if not args.ip:
        return None
    if len(args.ip) != args.nodes:
        raise ConfigError(f"give --ip once per node: {len(args.ip)} for {args.nodes} nodes")
    ips = []
    for ip in args.ip:
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            raise ConfigError(f"--ip {ip!r} is not an IPv4 address") from None
        if addr.is_unspecified:
            raise ConfigError("--ip 0.0.0.0 is no address a peer can dial")
        ips.append(str(addr))
    return ips


def cmd_export(args: argparse.Namespace) -> int:
    ips = _check(args)
    plan = DevnetPlan(
        nodes=args.nodes,
        validators=args.validators,
        epoch_seconds=args.epoch_seconds,
        radios_per_node=args.radios_per_node,
        seed=args.seed.encode() if args.seed else os.urandom(16),
    )
    devnet = plan_devnet(plan, genesis_time_ms=int((time.time() + args.start_in) * 1000))
    root: Path = args.dir
    root.mkdir(parents=True, exist_ok=True)
    write_genesis(devnet, root / "genesis.json")
    genesis_text = (root / "genesis.json").read_text()
    genesis_hash = parse_genesis(genesis_text).genesis_hash.hex()
    if ips is None:
        ports = reserve_ports(2 * args.nodes)
        where = [("127.0.0.1", ports[2 * i], ports[2 * i + 1]) for i in range(args.nodes)]
    else:
        where = [(ip, args.port, args.api_port) for ip in ips]
    dial = [
        f"/ip4/{host}/tcp/{port}/p2p/{key.peer_id}"
        for (host, port, _), key in zip(where, devnet.node_keys, strict=True)
    ]
    shown = []
    for i, key in enumerate(devnet.node_keys):
        host, port, api_port = where[i]
        devices = {f"devices/{d.kind}-{d.key.address[:12]}.key": d.key for d in devnet.devices_of(i)}
        network: dict[str, object] = {
            "listen": f"/ip4/{host if ips is None else '0.0.0.0'}/tcp/{port}",
            "bootstrap": [dial[s] for s in range(args.seeds) if s != i],
        }
        if ips is not None:
            network["announce"] = [f"/ip4/{host}/tcp/{port}"]
        toml = render_config(
            {
                "network": network,
                "api": {"port": api_port},
                "log": {"format": "json", "file": "node.log"},
                "devices": {"keys": sorted(devices), "world_seed": devnet.plan.seed.hex()},
            }
        )
        path = root / f"node-{i}.bundle"
        write_bundle(path, Bundle(devnet.network_id, genesis_text, toml, key, devices))
        shown.append({"index": i, "bundle": str(path), "address": key.address, "multiaddr": dial[i]})
    result = {
        "dir": str(root),
        "network_id": devnet.network_id,
        "genesis_hash": genesis_hash,
        "genesis_time_ms": devnet.genesis["genesis_time_ms"],
        "seeds": dial[: args.seeds],
        "nodes": shown,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"wrote {root / 'genesis.json'} (network {devnet.network_id}, genesis hash {genesis_hash})")
    for node in shown:
        print(f"  node {node['index']}: {node['bundle']}  {node['multiaddr']}")
    print("on each machine: depin-p2p init --bundle node-<i>.bundle --home DIR && depin-p2p run --home DIR")
    return 0
