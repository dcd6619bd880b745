"""Every shipped manifest gives the same invariant verdicts on processes (`run`) as in the simulator (`sim`).

Each manifest of ``devnet/manifests/`` runs as shipped except for its epoch
length (``--epoch-seconds 3``: their 5-10 s epochs do not fit the suite), on
127.0.0.1 (``--loopback``: none of these cuts a link). ``partition`` needs a
namespace per node and runs in ``test_run_netns.py``, ``quorum-loss`` in
``test_run_quorum_loss.py``, each with more checks of its own; the first test
here says that the three files together run every shipped manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration import test_run_netns, test_run_quorum_loss
from tests.integration.test_run_netns import _devnet, _processes_naming

SHIPPED = Path(__file__).resolve().parents[2] / "devnet" / "manifests"
FAST = ("--epoch-seconds", "3")
ELSEWHERE = {"partition": test_run_netns, "quorum-loss": test_run_quorum_loss}
HERE = sorted(p.stem for p in SHIPPED.glob("*.toml") if p.stem not in ELSEWHERE)


def test_every_shipped_manifest_runs_on_processes_in_one_of_the_tests() -> None:
    shipped = {p.stem for p in SHIPPED.glob("*.toml")}
    assert set(HERE) | set(ELSEWHERE) == shipped
    for name, module in ELSEWHERE.items():
        assert module.SHIPPED == SHIPPED and (SHIPPED / f"{name}.toml").is_file()
        assert f'SHIPPED / "{name}.toml"' in Path(module.__file__ or "").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", HERE)
def test_a_shipped_manifest_gives_the_same_verdicts_on_processes_as_in_sim(tmp_path: Path, name: str) -> None:
    manifest = SHIPPED / f"{name}.toml"
    out = tmp_path / "out"
    code, stdout, stderr = _devnet(
        "run", str(manifest), *FAST, "--loopback", "--out", str(out), "--json", timeout=200
    )
    assert stdout, stderr[-3000:]
    report = json.loads(stdout)
    assert report["run"]["crashed"] == {}, report["run"]["crashed"]
    assert report["epoch_seconds"] == 3
    assert [e["epoch"] for e in report["epochs"]] == list(range(1, report["epochs_planned"] + 1))
    run_verdicts = {k: v["ok"] for k, v in report["invariants"].items()}

    code_sim, sim_stdout, sim_stderr = _devnet("sim", str(manifest), *FAST, "--json", timeout=120)
    assert sim_stdout, sim_stderr[-3000:]
    sim_verdicts = {k: v["ok"] for k, v in json.loads(sim_stdout)["invariants"].items()}
    assert run_verdicts == sim_verdicts, (report["invariants"], stderr[-2000:])
    assert code == code_sim == 0, report["invariants"]  # every shipped manifest holds every invariant
    assert _processes_naming(str(out / "nodes")) == []
