"""Joining a network from `init --bootstrap`, on real processes at 127.0.0.1 (issue 17).

A seed listens on every interface and announces 127.0.0.2 (also this
machine's loopback, but an address it does not listen on by name); a second
node bootstraps to the seed, a third only to the second. The third reaches
the seed through what the second learnt by peer exchange. The seed's API is
opened beyond loopback, so it needs the bearer token of its home.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from depin_p2p.config import load_config, load_node_key
from depin_p2p.crypto import write_key_file
from devnet.genesis import DevnetPlan, plan_devnet, write_genesis
from devnet.layout import Layout, NodeLayout, reserve_ports
from devnet.runner import NodeProcess, stop_all, summarize

pytestmark = pytest.mark.slow


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "depin_p2p", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def ok_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict)
    return doc


def one_line_exit_2(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0], lines[0]


def wait_for(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def status_of(home: Path) -> dict[str, Any] | None:
    proc = cli("status", "--home", str(home), "--json")
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def test_init_refuses_bad_join_options_in_one_line(tmp_path: Path) -> None:
    devnet = plan_devnet(DevnetPlan(nodes=1), genesis_time_ms=int(time.time() * 1000))
    genesis = tmp_path / "genesis.json"
    write_genesis(devnet, genesis)
    base = ("init", "--home", str(tmp_path / "h"), "--genesis", str(genesis))
    one_line_exit_2(cli(*base, "--bootstrap", "/ip4/10.0.0.1/tcp/4001"), "/p2p/<peer id>")
    one_line_exit_2(cli(*base, "--bootstrap", "/dns/example/tcp/1"), "not a multiaddr")
    one_line_exit_2(cli(*base, "--listen", "/ip4/0.0.0.0/tcp/4001"), "--announce")
    one_line_exit_2(cli(*base, "--api-host", "somewhere"), "not an IP address")
    assert not (tmp_path / "h").exists()


def test_a_node_joins_from_one_bootstrap_address_and_the_open_api_needs_its_token(tmp_path: Path) -> None:
    devnet = plan_devnet(
        DevnetPlan(nodes=3, validators=1, epoch_seconds=2.0),
        genesis_time_ms=int(time.time() * 1000) + 2_000,
    )
    genesis = tmp_path / "genesis.json"
    write_genesis(devnet, genesis)
    ports = reserve_ports(6)
    homes = [tmp_path / f"n{i}" for i in range(3)]
    layouts = []
    for i, key in enumerate(devnet.node_keys):
        write_key_file(tmp_path / f"k{i}", key)
        layouts.append(NodeLayout(i, homes[i], ports[2 * i], ports[2 * i + 1], key.peer_id, key.address))
    seed_p2p = ports[0]
    ok_json(
        cli(
            "init", "--home", str(homes[0]), "--genesis", str(genesis), "--key", str(tmp_path / "k0"),
            "--listen", f"/ip4/0.0.0.0/tcp/{seed_p2p}", "--announce", f"/ip4/127.0.0.2/tcp/{seed_p2p}",
            "--api-host", "0.0.0.0", "--api-port", str(ports[1]), "--json",
        )
    )  # fmt: skip
    token_file = homes[0] / "api.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    seed_addr = f"/ip4/127.0.0.2/tcp/{seed_p2p}/p2p/{layouts[0].peer_id}"
    for i in (1, 2):
        boot = seed_addr if i == 1 else f"/ip4/127.0.0.1/tcp/{ports[2]}/p2p/{layouts[1].peer_id}"
        ok_json(
            cli(
                "init", "--home", str(homes[i]), "--genesis", str(genesis), "--key", str(tmp_path / f"k{i}"),
                "--listen", f"/ip4/127.0.0.1/tcp/{ports[2 * i]}", "--bootstrap", boot,
                "--api-port", str(ports[2 * i + 1]), "--json",
            )
        )  # fmt: skip
        assert f'bootstrap = ["{boot}"]' in (homes[i] / "node.toml").read_text()
    nodes = [NodeProcess(layout) for layout in layouts]
    try:
        for n in nodes:
            n.start()
        seed = wait_for(lambda: status_of(homes[0]), 30)
        assert seed is not None, nodes[0].tail()
        assert seed["announce"] == [seed_addr]
        # The third node knew only the second; it reaches the seed at the seed's announced address.
        joined = wait_for(
            lambda: (s := status_of(homes[2])) is not None and layouts[0].peer_id in s["peers"], 40
        )
        assert joined, (nodes[2].tail(), status_of(homes[2]))
        # Everyone follows the one validator's certificates.
        assert wait_for(lambda: all((s := status_of(h)) and s["last_epoch"] >= 2 for h in homes), 30), [
            n.tail() for n in nodes
        ]
        url = f"http://127.0.0.1:{ports[1]}/status"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
        token = token_file.read_text().strip()
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.loads(answer.read())["peer_id"] == layouts[0].peer_id
        # The loopback API of the others asks for no token.
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[3]}/status", timeout=5) as answer:
            assert answer.status == 200
    finally:
        stop_all(nodes)
    assert all(n.exited == 0 for n in nodes), [n.tail() for n in nodes]


def _bundle_layouts(root: Path, homes: list[Path]) -> list[NodeLayout]:
    out = []
    for i, home in enumerate(homes):
        cfg = load_config(home)
        key = load_node_key(cfg)
        out.append(NodeLayout(i, home, cfg.listen.port, cfg.api_port, key.peer_id, key.address))
    return out


def test_exported_bundles_make_a_devnet_that_commits_the_same_certificates(tmp_path: Path) -> None:
    out = tmp_path / "export"
    made = subprocess.run(
        [
            sys.executable, "-m", "devnet", "export", "--dir", str(out), "--nodes", "3", "--seeds", "1",
            "--epoch-seconds", "2", "--start-in", "4", "--json",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    exported = ok_json(made)
    assert len(exported["seeds"]) == 1
    homes = [tmp_path / f"home-{i}" for i in range(3)]
    for i, home in enumerate(homes):
        bundle = out / f"node-{i}.bundle"
        assert bundle.stat().st_mode & 0o777 == 0o600
        joined = ok_json(cli("init", "--bundle", str(bundle), "--home", str(home), "--json"))
        assert joined["address"] == exported["nodes"][i]["address"]
        assert joined["genesis_hash"] == exported["genesis_hash"]
        toml = (home / "node.toml").read_text()
        assert (exported["seeds"][0] in toml) == (i != 0)
    layouts = _bundle_layouts(out, homes)
    nodes = [NodeProcess(layout) for layout in layouts]
    try:
        for n in nodes:
            n.start()
        done = wait_for(lambda: all((s := status_of(h)) and s["last_epoch"] >= 3 for h in homes), 50)
        assert done, [n.tail() for n in nodes]
        live = status_of(homes[1])
        assert live is not None and live["sync"]["behind"] <= 1 and not live["sync"]["syncing"], live["sync"]
    finally:
        stop_all(nodes)
    summary = summarize(Layout(out, out / "genesis.json", tuple(layouts)), 3, [None] * 3)
    assert summary["agreement"], summary
    assert all(len(n["certificates"]) >= 3 for n in summary["nodes"])


def test_init_bundle_refuses_a_bad_or_mixed_invocation_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "export"
    export = [sys.executable, "-m", "devnet", "export", "--dir", str(out)]
    bad = subprocess.run(
        [*export, "--nodes", "2", "--ip", "10.0.0.1"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "once per node" in bad.stderr and len(bad.stderr.splitlines()) == 1
    ok = subprocess.run([*export, "--nodes", "2"], capture_output=True, text=True, check=False, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bundle = out / "node-1.bundle"
    home = str(tmp_path / "h")
    one_line_exit_2(
        cli("init", "--bundle", str(bundle), "--home", home, "--genesis", str(out / "genesis.json")),
        "--genesis",
    )
    one_line_exit_2(
        cli("init", "--bundle", str(out / "genesis.json"), "--home", home), "not a depin-p2p node bundle"
    )
    doc = json.loads(bundle.read_text())
    doc["address"] = json.loads((out / "node-0.bundle").read_text())["address"]
    forged = tmp_path / "forged.bundle"
    forged.write_text(json.dumps(doc))
    one_line_exit_2(cli("init", "--bundle", str(forged), "--home", home), "corrupt")
    doc = json.loads(bundle.read_text())
    doc["device_seeds"] = {"../../etc/x.key": "00" * 32}
    forged.write_text(json.dumps(doc))
    one_line_exit_2(cli("init", "--bundle", str(forged), "--home", home), "not under devices/")
    one_line_exit_2(cli("init", "--home", home), "--genesis FILE (or --bundle FILE)")
    assert not Path(home).exists()
    # An encrypted home from a bundle: node.toml names the passphrase file.
    pass_file = tmp_path / "pass"
    pass_file.write_text("s3cret\n")
    ok_json(
        cli("init", "--bundle", str(bundle), "--home", home, "--passphrase-file", str(pass_file), "--json")
    )
    assert "encryption" in json.loads((Path(home) / "node.key").read_text())
    assert load_node_key(load_config(Path(home))).address == doc["address"]


def test_genesis_fetch_checks_the_hash_against_a_real_node(tmp_path: Path) -> None:
    devnet = plan_devnet(
        DevnetPlan(nodes=1, epoch_seconds=2.0), genesis_time_ms=int(time.time() * 1000) + 2_000
    )
    genesis = tmp_path / "genesis.json"
    write_genesis(devnet, genesis)
    p2p, api = reserve_ports(2)
    home = tmp_path / "seed"
    write_key_file(tmp_path / "k", devnet.node_keys[0])
    made = ok_json(
        cli(
            "init", "--home", str(home), "--genesis", str(genesis), "--key", str(tmp_path / "k"),
            "--listen", f"/ip4/127.0.0.1/tcp/{p2p}", "--api-port", str(api), "--json",
        )
    )  # fmt: skip
    key = devnet.node_keys[0]
    node = NodeProcess(NodeLayout(0, home, p2p, api, key.peer_id, key.address))
    seed = f"/ip4/127.0.0.1/tcp/{p2p}/p2p/{key.peer_id}"
    out = tmp_path / "fetched.json"
    try:
        node.start()
        assert wait_for(lambda: status_of(home), 30), node.tail()
        wrong = "00" * 32
        one_line_exit_2(
            cli("genesis", "fetch", "--from", seed, "--expect-hash", wrong, "--out", str(out)), "refused"
        )
        assert not out.exists()
        fetched = ok_json(
            cli(
                "genesis",
                "fetch",
                "--from",
                seed,
                "--expect-hash",
                made["genesis_hash"],
                "--out",
                str(out),
                "--json",
            )
        )
        assert fetched["genesis_hash"] == made["genesis_hash"]
        assert out.read_bytes() == genesis.read_bytes()
        one_line_exit_2(
            cli("genesis", "fetch", "--from", seed, "--expect-hash", made["genesis_hash"], "--out", str(out)),
            "already exists",
        )
        one_line_exit_2(
            cli("genesis", "fetch", "--from", seed, "--expect-hash", "abc", "--out", str(out)), "64 hex"
        )
    finally:
        stop_all([node])
    # Nobody listens there any more: one line, exit 2, within the timeout.
    gone = cli(
        "genesis", "fetch", "--from", seed, "--expect-hash", made["genesis_hash"], "--out", str(out) + "2"
    )
    one_line_exit_2(gone, "cannot fetch the genesis")
