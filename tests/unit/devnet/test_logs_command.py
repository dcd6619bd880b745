"""`depin-devnet logs DIR`: the end of each node's output, readable; -f follows until Ctrl-C."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from devnet.genesis import DevnetPlan, plan_devnet
from devnet.layout import write_layout
from tests.unit.devnet.test_cli import REPO, _devnet, _one_line_exit_2

EVENT = {"epoch": 3, "event": "consensus.epoch.committed", "level": "info", "round": 0}


def _devnet_dir(tmp_path: Path) -> Path:
    devnet = plan_devnet(DevnetPlan(nodes=2, seed=b"logs-cmd"), genesis_time_ms=1_767_225_600_000)
    root = tmp_path / "dn"
    write_layout(devnet, root)
    for i in (0, 1):
        lines = [f"plain line {n} of node {i}" for n in range(5)]
        lines.append(json.dumps({**EVENT, "timestamp": "2026-12-02T02:01:37.517640Z"}))
        (root / f"node-{i}" / "stdout.log").write_text("\n".join(lines) + "\n")
    return root


def test_logs_of_one_node_and_of_all(tmp_path: Path) -> None:
    root = _devnet_dir(tmp_path)
    one = _devnet(tmp_path, "logs", str(root), "--node", "1", "-n", "2")
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines() == [
        "plain line 4 of node 1",
        "02:01:37.517 info    consensus.epoch.committed epoch=3 round=0",
    ]
    raw = _devnet(tmp_path, "logs", str(root), "--node", "0", "-n", "1", "--raw")
    assert json.loads(raw.stdout)["event"] == "consensus.epoch.committed"
    both = _devnet(tmp_path, "logs", str(root), "-n", "1").stdout.splitlines()
    assert [line.split(" | ")[0] for line in both] == ["node-0", "node-1"]
    _one_line_exit_2(_devnet(tmp_path, "logs", str(root), "--node", "2"), "--node must be between 0 and 1")


def test_follow_prints_new_lines_until_ctrl_c(tmp_path: Path) -> None:
    root = _devnet_dir(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devnet", "logs", str(root), "--node", "0", "-n", "0", "-f"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        got = ""
        with (root / "node-0" / "stdout.log").open("a") as log:
            while "fresh line" not in got:
                assert time.monotonic() < deadline, got
                log.write("fresh line\n")  # again until seen: the follower may not be reading yet
                log.flush()
                ready, _, _ = select.select([proc.stdout], [], [], 1.0)
                if ready:
                    got += proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        assert "plain line" not in got + rest  # -n 0: only what was written after it started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
