"""`depin-devnet run` with adversaries on real processes: 8 roles, each caught and penalised as in sim.

Two runs of six processes each (on 127.0.0.1, ``--loopback``): two honest
validators holding all but 150 of the power, and four adversaries, one role
each, started by `run` as ``python -m devnet.adversaries.proc`` through the
same role hooks the simulator calls. Run A holds the consensus roles and the
signature flood (three of them staked, 50 tokens each), run B the radio,
compute and crash-frame roles (no stake; the crash frames there include a
raw pubsub frame that is not protobuf, the one that kills a stock py-libp2p
host). One run of eight adversaries (eleven processes) did not commit on this
2-core machine shared with other jobs: two runs of four.

Each role's row of the report must say what the simulator says of it
(``depin-devnet attacks --sim``): detected on honest nodes by its role's
codes, and penalised the same way (the slash, the ban, the rejects or the
failed attestations); every invariant holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devnet.adversaries.registry import CATALOGUE, PROCESS_ROLES
from tests.integration.test_run_netns import _devnet, _processes_naming

pytestmark = pytest.mark.slow

HEAD = """\
name = "attacks-on-processes-{part}"
[network]
nodes = 6
epoch_seconds = 3
epochs = {epochs}
seed = 3
{network}
[devices]
radios_per_node = 1
compute = {compute}
"""
# Run B lasts 8 epochs: the rssi liar's peer is banned by its bundles' rejects (10 points each,
# 1 leaking per second, 100 to a ban), 2-3 bundles an epoch. At 5 epochs it reached the threshold
# only just (10 or 11 bundles per honest node), and a busy CI runner once saw it stay at 10.
EPOCHS = {"a": 5, "b": 8}
RUNS = {
    "a": (
        "validators = 5\nstake = [20000, 20000, 50, 50, 50]\n",
        '"none"',
        ("equivocating-validator", "stale-replay", "invalid-signature-flood", "non-validator-voter"),
    ),
    "b": (
        "validators = 2\n",
        "[0, 1, 4]",
        ("rssi-liar", "beacon-replay", "wrong-result", "crash-frames"),
    ),
}
# The penalty each role earns in the simulator's catalogue, the one it must earn on processes.
PENALTY = {
    "equivocating-validator": "slashed_micro",
    "stale-replay": "rejected",
    "invalid-signature-flood": "banned_by",
    "non-validator-voter": "rejected",
    "rssi-liar": "banned_by",
    "beacon-replay": "rejected",
    "wrong-result": "attested_failed",
    "crash-frames": "banned_by",
}


def _manifest(part: str) -> str:
    network, compute, roles = RUNS[part]
    text = HEAD.format(part=part, network=network, compute=compute, epochs=EPOCHS[part])
    for i, role in enumerate(roles):
        text += f'\n[[adversary]]\nrole = "{role}"\nnode = {i + 2}\nfrom_epoch = 1\n'
    return text


def test_the_process_roles_cover_every_family_and_this_test_runs_each() -> None:
    tested = {r for _, _, roles in RUNS.values() for r in roles}
    assert tested == PROCESS_ROLES == set(PENALTY)
    assert {CATALOGUE[r].family for r in tested} == {"consensus", "radio", "compute", "network"}


@pytest.mark.parametrize("part", sorted(RUNS))
def test_adversaries_on_processes_are_caught_and_penalised_as_in_sim(tmp_path: Path, part: str) -> None:
    manifest = tmp_path / f"{part}.toml"
    manifest.write_text(_manifest(part))
    out = tmp_path / "out"
    code, stdout, stderr = _devnet(
        "run", str(manifest), "--loopback", "--out", str(out), "--json", timeout=150
    )
    assert code == 0, stderr[-3000:]
    report: dict[str, Any] = json.loads(stdout)
    assert report["run"]["crashed"] == {}
    assert all(v["ok"] for v in report["invariants"].values()), report["invariants"]
    rows = {r["role"]: r for r in report["attacks"]}
    assert sorted(rows) == sorted(RUNS[part][2])
    for role, row in rows.items():
        assert row["did"], f"{role} did nothing"
        assert row["detected"], row
        assert set(row["detection_codes"]) <= CATALOGUE[role].codes, row
        assert row["time_to_detect_ms"] is not None and row["time_to_detect_ms"] >= 0, row
        assert row["penalty"][PENALTY[role]] > 0, row
        assert row["invariants_ok"], row
    if part == "b":
        # On processes the crash frames include a raw pubsub frame, refused below our gossip layer.
        assert rows["crash-frames"]["did"]["raw_rpc_frames"] > 0
        assert "malformed_rpc" in rows["crash-frames"]["detection_codes"]
    assert _processes_naming(str(out / "nodes")) == []
