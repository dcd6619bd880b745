"""`depin-devnet sim`: every shipped manifest holds every invariant, one seed is one report."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from depin_p2p import wire
from depin_p2p.assemble import Devices
from depin_p2p.witness.devices import RadioDriver
from devnet import manifest as manifest_module
from devnet.adversaries import registry
from devnet.adversaries.base import Host, Role
from devnet.invariants import check_all
from devnet.manifest import load_manifest, parse_manifest
from devnet.report import build_report, report_json
from devnet.sim import Simulation, simulate

MANIFESTS = sorted((Path(__file__).resolve().parents[2] / "devnet" / "manifests").glob("*.toml"))


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_every_shipped_manifest_holds_every_invariant_in_the_simulator(path: Path) -> None:
    manifest = load_manifest(path)
    run = simulate(manifest, manifest.network.seed)
    verdicts = check_all(run)
    assert all(v.ok for v in verdicts.values()), {k: v.detail for k, v in verdicts.items() if not v.ok}
    honest = [n for n in run.nodes if n.honest and n.running_at_end]
    assert all(max(e.epoch for e in n.epochs) >= manifest.network.epochs for n in honest)
    for adversary in manifest.adversaries:  # each equivocator is convicted everywhere and slashed
        liar = run.nodes[adversary.node].validator_address
        assert all(liar in n.evidence_offenders for n in honest)
        assert sum(e.slashed for e in run.nodes[0].epochs) > 0


SHORT = "[network]\nnodes = 4\nepochs = 3\nepoch_seconds = 5\n"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "devnet", "sim", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def test_one_seed_gives_one_report_and_another_seed_another(tmp_path: Path) -> None:
    path = tmp_path / "short.toml"
    path.write_text(SHORT)
    manifest = load_manifest(path)

    def report(seed: int) -> bytes:
        run = simulate(manifest, seed)
        return report_json(build_report(manifest, seed, run, check_all(run)))

    first = report(11)
    assert report(11) == first
    assert report(12) != first
    # And in a process of its own, as a researcher runs it.
    cli = _cli(str(path), "--seed", "11", "--json")
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert cli.stdout.encode() == first


@pytest.mark.parametrize("name", ["smoke", "attacks/witness-ring"])
def test_judgements_the_simulated_nodes_share_change_no_report(name: str) -> None:
    manifest = load_manifest(MANIFESTS[0].parent / f"{name}.toml")
    seed = manifest.network.seed
    shared = Simulation(manifest, seed)
    alone = Simulation(manifest, seed)
    alone.report_verdicts = alone.checked_values = None  # each node judges every proof and value itself
    reports = []
    for sim in (shared, alone):
        run = sim.run()
        reports.append(report_json(build_report(manifest, seed, run, check_all(run))))
    assert reports[0] == reports[1]
    assert shared.report_verdicts is not None and shared.checked_values is not None
    honest = [n for n in shared.nodes if n.honest]  # an adversary keeps memories of its own
    assert all(n.services is not None for n in shared.nodes)
    assert all((n.services.pool.verdicts is shared.report_verdicts) == n.honest for n in shared.nodes)  # type: ignore[union-attr]
    assert shared.report_verdicts.hits > shared.report_verdicts.misses * (len(honest) - 2)
    assert shared.checked_values.hits >= shared.checked_values.misses * (len(honest) - 2) > 0


class _ForgingRadio:
    """A radio driver whose reports carry a corrupted signature (its node marks them good, as its own)."""

    def __init__(self, inner: RadioDriver, host: Host, role: Role) -> None:
        self._inner, self._host, self._role = inner, host, role

    @property
    def device_id(self) -> bytes:
        return self._inner.device_id

    async def beacon(self, *, epoch: int, nonce: int) -> wire.Envelope:
        return await self._inner.beacon(epoch=epoch, nonce=nonce)

    async def witness(self, beacon_envelope: wire.Envelope) -> wire.Envelope | None:
        env = await self._inner.witness(beacon_envelope)
        if env is None or not self._role.active(self._host):
            return env
        return dataclasses.replace(env, signature=bytes([env.signature[0] ^ 0xFF]) + env.signature[1:])


class _ForgedReports(Role):
    name = "forged-reports"
    family = "radio"
    summary = "reports with corrupted signatures, which its own signature cache passes"
    codes = frozenset({"bad_signature"})

    def devices(self, host: Host, devices: Devices) -> Devices:
        return dataclasses.replace(devices, radios=[_ForgingRadio(r, host, self) for r in devices.radios])


def test_an_adversary_whose_cache_passes_its_forgeries_shares_no_judgement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found in review: with one memory for every node, the forger's own verdicts (reached by a
    # cache that passes what it marked) served the honest nodes, and they accepted its proposals.
    monkeypatch.setitem(registry.CATALOGUE, _ForgedReports.name, _ForgedReports)
    monkeypatch.setattr(manifest_module, "ADVERSARY_ROLES", frozenset(registry.CATALOGUE))
    manifest = parse_manifest(
        "[network]\nnodes = 4\nvalidators = 4\nepoch_seconds = 10\nepochs = 5\nseed = 1\n"
        '[[adversary]]\nrole = "forged-reports"\nnode = 3\nfrom_epoch = 2\n'
    )
    reports = []
    for share in (True, False):
        sim = Simulation(manifest, 1)
        if not share:
            sim.report_verdicts = sim.checked_values = None
        run = sim.run()
        verdicts = check_all(run)
        assert all(v.ok for v in verdicts.values()), {k: v.detail for k, v in verdicts.items() if not v.ok}
        reports.append(report_json(build_report(manifest, 1, run, verdicts)))
    assert reports[0] == reports[1]


def test_a_stalled_network_fails_liveness_with_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "stall.toml"
    # Split 2|2 from the first epoch and never healed: no side has a quorum, nothing commits.
    cut = '[[perturbation]]\nat_epoch = 1\naction = "partition"\ngroups = [[0, 1], [2, 3]]\n'
    path.write_text(SHORT + cut)
    proc = _cli(str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "invariant failed: liveness" in proc.stderr
    assert (tmp_path / "out" / "report.json").exists() and (tmp_path / "out" / "report.html").exists()


def test_a_bad_manifest_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[network]\nnodes = 4\nepochs = 3\n[[adversary]]\nrole = \"dragon\"\nnode = 1\n")
    proc = _cli(str(path))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "adversary[0].role: unknown role 'dragon'" in proc.stderr


def test_epoch_seconds_overrides_the_manifest_and_a_bad_one_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "short.toml"
    path.write_text(SHORT)
    cli = _cli(str(path), "--epoch-seconds", "2", "--json")
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert '"epoch_seconds": 2.0' in cli.stdout
    for bad in ("0.5", "1.0005", "100000"):
        proc = _cli(str(path), "--epoch-seconds", bad)
        assert proc.returncode == 2, (bad, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "--epoch-seconds: must be" in proc.stderr, proc.stderr
