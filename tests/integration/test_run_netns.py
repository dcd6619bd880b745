"""`depin-devnet run` on real processes, one network namespace each: a real partition, the sim's verdicts.

The shipped ``partition`` manifest, with 3 s epochs. One run serves every
check (the suite's time is short): a 2|2 partition of four validators cut
by setting the four veth links between the halves down.
While cut, neither half (2 of 4 equal validators, no quorum) commits, the cut
links carry no byte while the links inside each half carry its traffic;
after the heal both halves resume and every node holds the same certificate
for every epoch. Then `sim` on the same manifest
gives the same invariant verdicts, and no namespace or process of the run is
left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devnet import netns

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        netns.unavailable_reason() is not None,
        reason=f"depin-devnet run in namespaces: {netns.unavailable_reason()}",
    ),
]

SHIPPED = Path(__file__).resolve().parents[2] / "devnet" / "manifests"
EPOCHS = 9  # the shipped partition.toml: a 2|2 cut at epoch 3, healed at 6, of 9
FAST = ("--epoch-seconds", "3")  # its 10 s epochs, shortened to fit the suite


def _devnet(*args: str, timeout: float) -> tuple[int, str, str]:
    # Its own session: if it hangs, the whole group (runner and node processes) is killed.
    proc = subprocess.Popen(
        [sys.executable, "-m", "devnet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    return proc.returncode, stdout, stderr


def _processes_naming(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
    return pids


def test_partition_on_processes_is_a_real_cut_and_agrees_with_sim(tmp_path: Path) -> None:
    manifest = SHIPPED / "partition.toml"
    out = tmp_path / "out"
    code, stdout, stderr = _devnet("run", str(manifest), *FAST, "--out", str(out), "--json", timeout=150)
    assert code == 0, stderr[-3000:]
    assert "no netem" in stderr  # the warning line: link delay and loss are not applied
    report = json.loads(stdout)
    run = report["run"]
    assert run["isolation"] == "netns" and run["warnings"] == [] and run["crashed"] == {}

    # The cut is real: the four links between the halves carried nothing, those inside them carried traffic.
    [cut] = run["cuts"]
    assert (cut["from_epoch"], cut["to_epoch"]) == (3, 6)
    assert cut["links"] == [[0, 2], [0, 3], [1, 2], [1, 3]]
    assert cut["bytes_on_cut_links"] == 0
    assert cut["bytes_on_other_links"] > 1_000
    # While cut, neither half has a quorum: nobody commits (an epoch whose certificate was
    # already on its way when the links went down may land at once; nothing after it).
    committed = cut["committed_while_cut"]
    assert all(len(committed[i]) <= 1 for i in ("0", "1", "2", "3")), committed

    # After the heal every node, node 3 included, holds one and the same certificate per epoch.
    assert [e["epoch"] for e in report["epochs"]] == list(range(1, EPOCHS + 1))
    for e in report["epochs"]:
        assert sorted(e["certificates"]) == ["0", "1", "2", "3"], e
        assert len(set(e["certificates"].values())) == 1, e
    assert "too soon" not in report["invariants"]["liveness"]["detail"]  # judged, not skipped
    assert (out / "report.html").is_file()

    # The simulator gives the same verdicts on the same manifest.
    code, sim_stdout, sim_stderr = _devnet("sim", str(manifest), *FAST, "--json", timeout=120)
    assert code == 0, sim_stderr[-3000:]
    sim_verdicts = {k: v["ok"] for k, v in json.loads(sim_stdout)["invariants"].items()}
    run_verdicts = {k: v["ok"] for k, v in report["invariants"].items()}
    assert run_verdicts == sim_verdicts
    assert all(run_verdicts.values()), report["invariants"]

    # Nothing left behind: the run's namespaces are gone and no process names its node homes.
    assert len(run["namespaces"]) == 4
    assert not set(run["namespaces"]) & set(netns.list_namespaces())
    assert _processes_naming(str(out / "nodes")) == []
