"""`depin-devnet run` on processes: a network that lost its quorum resumes when a validator returns.

Two of five validators are killed at once (3 of 5 equal votes: no quorum) and
come back one at a time. The first returns after the network's last commit,
so no certificate is gossiped to it until its own vote makes one: it must
catch up from what the others re-send. Found with the shipped `quorum-loss`
manifest: on processes the network never committed again, because our
libp2p pubsub dropped our own re-publish of a vote we had published before
(the memory network sent it, so the simulator recovered); and in the
simulator the returning node never synced, because only a certificate, not
a vote, showed it behind. On 127.0.0.1 (`--loopback`): kills and restarts
need no namespaces.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_run_netns import _devnet, _processes_naming

pytestmark = pytest.mark.slow

EPOCHS, EPOCH_S = 9, 3
MANIFEST = f"""\
name = "quorum-loss-short"
[network]
nodes = 5
validators = 5
epoch_seconds = {EPOCH_S}
epochs = {EPOCHS}
seed = 4

[[perturbation]]
at_epoch = 3
action = "kill"
node = 1

[[perturbation]]
at_epoch = 3
action = "kill"
node = 2

[[perturbation]]
at_epoch = 5
action = "restart"
node = 1

[[perturbation]]
at_epoch = 7
action = "restart"
node = 2
"""


def test_a_network_without_quorum_resumes_when_one_validator_returns(tmp_path: Path) -> None:
    manifest = tmp_path / "quorum-loss.toml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "out"
    code, stdout, stderr = _devnet(
        "run", str(manifest), "--loopback", "--out", str(out), "--json", timeout=150
    )
    assert code == 0, stderr[-3000:]
    report = json.loads(stdout)
    assert report["run"]["crashed"] == {}
    assert [e["epoch"] for e in report["epochs"]] == list(range(1, EPOCHS + 1))
    for e in report["epochs"]:
        assert sorted(e["certificates"]) == ["0", "1", "2", "3", "4"], e  # the killed ones synced too
        assert len(set(e["certificates"].values())) == 1, e
    # The stall happened: some epoch waited for the returning validator, well past its slot.
    assert max(e["commit_latency_ms_median"] for e in report["epochs"]) > 2 * EPOCH_S * 1000
    run_verdicts = {k: v["ok"] for k, v in report["invariants"].items()}
    assert all(run_verdicts.values()), report["invariants"]

    code, sim_stdout, sim_stderr = _devnet("sim", str(manifest), "--json", timeout=120)
    assert code == 0, sim_stderr[-3000:]
    assert {k: v["ok"] for k, v in json.loads(sim_stdout)["invariants"].items()} == run_verdicts
    assert _processes_naming(str(out / "nodes")) == []
