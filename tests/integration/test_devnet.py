"""The product as a tester and a node runner use it: real processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from depin_p2p.consensus.state import Certificate, certificate_hash
from depin_p2p.ledger.store import LedgerStore
from devnet.genesis import DevnetPlan, plan_devnet, write_genesis
from devnet.layout import NodeLayout, node_toml, write_layout
from devnet.runner import NodeProcess, fetch_status, stop_all, wait_until_up

pytestmark = pytest.mark.slow


def test_devnet_up_commits_identical_epochs_and_pays_rewards(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "devnet", "up", "--nodes", "4", "--epochs", "3", "--epoch-seconds", "2"]
    argv += ["--json", "--dir", str(tmp_path / "devnet")]
    # Its own session: if it hangs, the whole group (the devnet and its node processes) is killed.
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout)
    nodes = summary["nodes"]
    assert len(nodes) == 4
    for epoch in ("1", "2", "3"):
        assert len({n["certificates"][epoch] for n in nodes}) == 1, f"nodes disagree on epoch {epoch}"
    emission = summary["emission_per_epoch"]
    for n in nodes:
        proofs = n["proofs_accepted"]
        assert proofs["beacons"] > 0 and proofs["reports"] > 0  # radio coverage proofs
        assert proofs["attestations"] > 0  # compute proofs
        # Emission is minted only when earned (an epoch a slow start left without proofs mints 0),
        # and everything minted was paid out: supply = genesis + rewards, in whole epochs' emissions.
        assert n["rewards_paid"] % emission == 0
        assert emission <= n["rewards_paid"] <= n["last_epoch"] * emission
        assert n["total_supply"] == summary["genesis_supply"] + n["rewards_paid"]
    assert summary["agreement"] is True


def _certs(home: Path) -> dict[int, bytes]:
    from depin_p2p import wire  # noqa: PLC0415

    with LedgerStore.open(home / "data", readonly=True) as store, store.view() as view:
        out = {}
        for epoch in range(1, view.last_epoch() + 1):
            raw = view.get_certificate(epoch)
            assert raw is not None
            out[epoch] = certificate_hash(wire.decode_as(raw, Certificate))
        return out


def test_a_late_node_catches_up_from_one_bootstrap_address(tmp_path: Path) -> None:
    plan = DevnetPlan(nodes=5, validators=4, epoch_seconds=2, seed=b"late-node")
    devnet = plan_devnet(plan, genesis_time_ms=int(time.time() * 1000) + 4_000)
    layout = write_layout(devnet, tmp_path / "devnet")
    late = layout.nodes[4]
    # The late node knows one peer only.
    config = (late.home / "node.toml").read_text()
    start = config.index("bootstrap = [")
    end = config.index("]", start)
    (late.home / "node.toml").write_text(
        config[:start] + f'bootstrap = ["{layout.nodes[0].multiaddr}"' + config[end:]
    )
    first = [NodeProcess(n) for n in layout.nodes[:4]]
    second = NodeProcess(late)
    try:
        for n in first:
            n.start()
        trio.run(wait_until_up, first, 60.0)

        async def wait_epoch(node: NodeProcess, epoch: int, timeout: float) -> dict[str, object]:
            with trio.fail_after(timeout):
                while True:
                    assert node.exited is None, node.tail()
                    st = await fetch_status(node.layout)
                    if st is not None and int(st.get("last_epoch", 0)) >= epoch:  # type: ignore[call-overload]
                        return st
                    await trio.sleep(0.3)

        trio.run(wait_epoch, first[0], 3, 60.0)
        second.start()
        trio.run(wait_until_up, [second], 60.0)
        trio.run(wait_epoch, second, 5, 60.0)  # caught up on 1..3, then follows live epochs
    finally:
        stop_all([*first, second])
    late_certs = _certs(late.home)
    ref = _certs(layout.nodes[0].home)
    assert len(late_certs) >= 5
    assert all(late_certs[e] == ref[e] for e in late_certs if e in ref)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "depin_p2p", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _one_line_exit_2(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0], lines[0]


def _home(tmp_path: Path, name: str = "node", seed: bytes = b"bad-starts") -> Path:
    devnet = plan_devnet(DevnetPlan(nodes=1, seed=seed), genesis_time_ms=int(time.time() * 1000))
    layout = write_layout(devnet, tmp_path / name)
    return layout.nodes[0].home


def test_bad_starts_are_one_line_and_exit_2(tmp_path: Path) -> None:
    _one_line_exit_2(_run("run", "--home", str(tmp_path / "missing")), "does not exist")

    home = _home(tmp_path)
    (home / "node.toml").write_text("this is = = not toml")
    _one_line_exit_2(_run("run", "--home", str(home)), "not valid TOML")

    home = _home(tmp_path, "corrupt-key")
    (home / "node.key").write_bytes((home / "node.key").read_bytes()[:40])
    _one_line_exit_2(_run("run", "--home", str(home)), "corrupt or truncated")

    home = _home(tmp_path, "busy-port")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (home / "node.toml").write_text(
            node_toml(p2p_port=port, api_port=0, bootstrap=[], device_keys=[], world_seed="")
        )
        _one_line_exit_2(_run("run", "--home", str(home)), "already in use")

    home = _home(tmp_path, "other-genesis")
    other = plan_devnet(DevnetPlan(nodes=1, seed=b"another-network"), genesis_time_ms=int(time.time() * 1000))
    write_genesis(other, home / "genesis.json")
    (home / "node.toml").write_text(
        node_toml(p2p_port=0, api_port=0, bootstrap=[], device_keys=[], world_seed="")
    )
    _one_line_exit_2(_run("run", "--home", str(home)), "another genesis")


def _devnet_up(*args: str) -> subprocess.Popen[str]:
    """``depin-devnet ARGS`` in its own session, so a hung one is killed with all its nodes."""
    return subprocess.Popen(
        [sys.executable, "-m", "devnet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _kill_session(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _node_pid(root: Path, index: int, proc: subprocess.Popen[str], timeout: float = 90) -> int:
    runtime = root / f"node-{index}" / "run.json"
    deadline = time.monotonic() + timeout
    while not runtime.exists():
        assert time.monotonic() < deadline, f"node {index} never started"
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    return int(json.loads(runtime.read_text())["pid"])


def test_a_crashed_node_is_reported_and_restarted_while_the_others_keep_going(tmp_path: Path) -> None:
    # Node 2 observes (2 validators), so the others' progress does not wait for its restart
    # (a validator's restart is test_consensus_crash's subject).
    root = tmp_path / "devnet"
    argv = ["up", "--nodes", "3", "--validators", "2", "--epoch-seconds", "2", "--epochs", "4", "--json"]
    proc = _devnet_up(*argv, "--dir", str(root))
    try:
        victim = _node_pid(root, 2, proc)
        others = [_node_pid(root, i, proc) for i in (0, 1)]
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        _kill_session(proc)
    assert proc.returncode == 0, stderr[-3000:]
    assert "node 2 exited with status -9; restarting it" in stderr
    assert "node.started" in stderr  # the tail of its log comes with the report
    summary = json.loads(stdout)
    # (Under heavy load another node may crash in py-libp2p too: the same path restarts it.)
    assert summary["nodes"][2]["restarts"] >= 1
    assert all(n["state"] == "up" and n["last_epoch"] >= 4 for n in summary["nodes"])
    assert summary["agreement"] is True
    assert all(not os.path.exists(f"/proc/{pid}") for pid in [victim, *others])


def test_no_restart_keeps_a_crashed_node_down_and_a_stopped_node_costs_nothing(tmp_path: Path) -> None:
    # Node 2 observes (2 validators); SIGSTOP makes its /status polls time out (which used to make the
    # supervisor SIGTERM every node), then SIGKILL ends it and --no-restart keeps it down.
    root = tmp_path / "devnet"
    argv = ["up", "--nodes", "3", "--validators", "2", "--epoch-seconds", "2", "--epochs", "7"]
    proc = _devnet_up(*argv, "--no-restart", "--json", "--dir", str(root))
    try:
        stopped = _node_pid(root, 2, proc)
        os.kill(stopped, signal.SIGSTOP)
        time.sleep(6)  # several 2 s poll timeouts
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        os.kill(stopped, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        _kill_session(proc)
    assert proc.returncode == 1, stderr[-3000:]  # a node is down at the end
    assert "Traceback" not in stderr
    assert "node 2 exited with status -9; kept down (--no-restart)" in stderr
    summary = json.loads(stdout)
    assert [n["state"] for n in summary["nodes"]] == ["up", "up", "down"]
    assert all(n["last_epoch"] >= 7 for n in summary["nodes"][:2])
    assert summary["agreement"] is True


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devnet", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _recorded_pids(root: Path) -> set[tuple[int, Path]]:
    """Every node PID the devnet wrote down, with its home (a PID is killed only if it is still that node)."""
    pids = set()
    for home in root.glob("node-*"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pids.add((int(json.loads((home / "run.json").read_text())["pid"]), home))
    with contextlib.suppress(OSError, ValueError, KeyError):
        for n in json.loads((root / "devnet.json").read_text())["nodes"]:
            pids.add((int(n["pid"]), Path(n["home"])))
    return pids


def _alive(pid: int, home: Path) -> bool:
    from devnet.runner import node_pid_alive  # noqa: PLC0415

    return node_pid_alive(pid, home)


def test_detach_status_logs_down_and_resume(tmp_path: Path) -> None:
    root = tmp_path / "devnet"
    seen: set[tuple[int, Path]] = set()
    try:
        up = _cli("up", "--detach", "--nodes", "2", "--epoch-seconds", "2", "--dir", str(root))
        assert up.returncode == 0, up.stderr[-3000:]
        assert f"depin-devnet down {root}" in up.stderr
        record = json.loads((root / "devnet.json").read_text())
        pids = {(n["pid"], Path(n["home"])) for n in record["nodes"]}
        seen.update(pids)
        assert len(pids) == 2 and all(_alive(*p) for p in pids)

        async def wait_epoch(epoch: int) -> int:
            with trio.fail_after(120):
                while True:
                    statuses = [await fetch_status(n) for n in _layout(root)]
                    if all(s is not None and int(s["last_epoch"]) >= epoch for s in statuses):
                        return min(int(s["last_epoch"]) for s in statuses if s is not None)
                    await trio.sleep(0.5)

        reached = trio.run(wait_epoch, 2)
        status = _cli("status", str(root))
        assert status.returncode == 0, status.stderr
        assert "2 nodes (2 validators)" in " ".join(status.stdout.split())
        doc = json.loads(_cli("status", str(root), "--json").stdout)
        assert [n["state"] for n in doc["nodes"]] == ["up", "up"]
        logs = _cli("logs", str(root), "--node", "1", "--lines", "1000")
        assert logs.returncode == 0 and "node.started" in logs.stdout and "node-0 |" not in logs.stdout
        both = _cli("logs", str(root), "-n", "3")
        assert "node-0 | " in both.stdout and "node-1 | " in both.stdout

        down = _cli("down", str(root))
        assert down.returncode == 0, down.stderr
        assert "stopped 2 nodes" in down.stderr
        assert not any(_alive(*p) for p in pids)
        assert not (root / "devnet.json").exists()
        stopped = _cli("status", str(root))
        assert stopped.returncode == 1 and "down" in stopped.stdout

        resumed = _cli("up", "--resume", str(root), "--detach")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        seen.update(_recorded_pids(root))
        assert trio.run(wait_epoch, reached + 1) > reached  # the same ledger, going on
        again = _cli("up", "--resume", str(root), "--detach")
        assert again.returncode == 2 and "still running" in again.stderr
        assert _cli("down", str(root)).returncode == 0
        assert not any(_alive(*p) for p in _recorded_pids(root))
    finally:
        seen.update(_recorded_pids(root))
        for pid, home in seen:
            if _alive(pid, home):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _layout(root: Path) -> list[NodeLayout]:
    from devnet.runner import load_layout  # noqa: PLC0415

    return list(load_layout(root).nodes)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_node_stops_cleanly_within_2_seconds(tmp_path: Path, signum: int) -> None:
    home = _home(tmp_path, seed=b"clean-stop")
    node = NodeProcess(layout=_layout_of(home))
    try:
        node.start()
        trio.run(wait_until_up, [node], 60.0)
        assert node.process is not None
        started = time.monotonic()
        node.signal(signum)
        assert node.process.wait(timeout=10) == 0
        assert time.monotonic() - started < 2.0
    finally:
        stop_all([node])
    assert "node.stopping" in (home / "node.log").read_text()


def _layout_of(home: Path) -> NodeLayout:
    from depin_p2p.config import load_config  # noqa: PLC0415
    from depin_p2p.crypto import load_key_file  # noqa: PLC0415

    cfg = load_config(home)
    key = load_key_file(cfg.key_file)
    return NodeLayout(0, home, cfg.listen.port, cfg.api_port, key.peer_id, key.address)
