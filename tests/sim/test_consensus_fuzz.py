"""Acceptance of epoch consensus under the deterministic fuzz harness (virtual time, one process).

Each test states what the harness must find, and the mutation tests build
the broken variants through the harness's parameters and check that the
harness catches each: a suite that cannot see these bugs would prove nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest

from devnet import fuzz
from devnet.fuzz import MUTATIONS, Scenario, SeedResult, run_seed, run_seeds

# (validators, byzantine, seeds): 650 seeds in all, each deciding 3 epochs.
SAFE_RUNS = [
    (4, 0, range(0, 100)),
    (4, 1, range(100, 300)),
    (7, 0, range(300, 350)),
    (7, 1, range(350, 450)),
    (7, 2, range(450, 650)),
]


def _f(n: int) -> int:
    return (n - 1) // 3


@pytest.mark.parametrize(("n", "byz", "seeds"), SAFE_RUNS, ids=[f"n{n}-b{b}" for n, b, _ in SAFE_RUNS])
def test_up_to_f_byzantine_agreement_and_liveness_after_healing(n: int, byz: int, seeds: range) -> None:
    scenario = Scenario(validators=n, byzantine=byz, epochs=3)
    results = list(run_seeds(scenario, seeds))
    bad = [r.seed for r in results if r.violation]
    assert not bad, f"seeds with a violation: {bad}"
    assert all(r.decided_epochs == 3 for r in results)
    # Honest validators are never convicted, whatever the Byzantine ones did.
    assert all(set(r.convicted) <= set(r.byzantine) for r in results)
    # The schedules really were hostile (otherwise this test would prove nothing).
    assert sum(r.crashes for r in results) > len(results) // 4
    assert sum(1 for r in results if max(r.rounds) > 0) > len(results) // 10
    if byz:
        modes = Counter(m for r in results for m in r.modes)
        assert set(modes) == set(fuzz.BYZANTINE_MODES)
        assert any(r.convicted for r in results)  # equivocators were seen and convicted


FORK_RUNS = [(4, "split", range(40)), (7, "split", range(40)), (4, None, range(100))]


@pytest.mark.parametrize(("n", "mode", "seeds"), FORK_RUNS)
def test_f_plus_one_byzantine_forks_are_found_and_convict_f_plus_one(
    n: int, mode: str | None, seeds: range
) -> None:
    f = _f(n)
    scenario = Scenario(validators=n, byzantine=f + 1, epochs=3, byzantine_mode=mode)
    results = list(run_seeds(scenario, seeds))
    forks = [r for r in results if r.forked]
    assert forks, "with f+1 Byzantine validators the harness must find a fork"
    for r in forks:
        assert len(r.convicted) >= f + 1, f"seed {r.seed}: fork without f+1 convicted ({r.convicted})"
        assert set(r.convicted) <= set(r.byzantine), f"seed {r.seed}: an honest validator convicted"
    assert not any(r.honest_equivocators for r in results)


# ---------------------------------------------------------------- mutation checks

MUTANT_RUNS = [
    # name, validators, byzantine, forced mode, seeds, what the harness must report
    ("quorum-2f", 4, 0, None, range(60), "agreement"),
    ("quorum-2f", 7, 2, None, range(100, 200), "agreement"),
    # ignore-locks: caught by the lock-split mode below (amnesia caught it in 2 seeds of 200).
    ("send-before-persist", 4, 0, None, range(120), "honest_equivocation"),
    ("send-before-persist", 7, 2, None, range(60), "honest_equivocation"),
]


def _caught(results: list[SeedResult], kind: str) -> list[int]:
    if kind == "agreement":
        return [r.seed for r in results if r.agreement_violations]
    return [r.seed for r in results if r.honest_equivocators]


@pytest.mark.parametrize(
    ("mutation", "n", "byz", "mode", "seeds", "kind"),
    MUTANT_RUNS,
    ids=[f"{m}-n{n}-b{b}" for m, n, b, *_ in MUTANT_RUNS],
)
def test_the_harness_catches_each_mutant(
    mutation: str, n: int, byz: int, mode: str | None, seeds: range, kind: str
) -> None:
    correct = Scenario(validators=n, byzantine=byz, byzantine_mode=mode)
    mutant = dataclasses.replace(correct, **MUTATIONS[mutation])  # type: ignore[arg-type]
    caught = _caught(list(run_seeds(mutant, seeds)), kind)
    assert caught, f"the harness did not catch {mutation}"
    # The same seeds with the correct code are clean: the mutation is what the harness saw.
    control = [run_seed(correct, s) for s in caught]
    assert not [r.seed for r in control if r.violation]


# (validators, byzantine, seeds): the lock-split adversary against the lock rule, with and without
# Byzantine help. Over 200 seeds (README) it catches ignore-locks in 88-97 % of them.
LOCK_SPLIT_RUNS = [(4, 1, range(40)), (7, 2, range(20))]


@pytest.mark.parametrize(
    ("n", "byz", "seeds"), LOCK_SPLIT_RUNS, ids=[f"n{n}-b{b}" for n, b, _ in LOCK_SPLIT_RUNS]
)
def test_lock_split_catches_ignore_locks_in_most_seeds_and_never_forks_the_correct_core(
    n: int, byz: int, seeds: range
) -> None:
    correct = Scenario(validators=n, byzantine=byz, byzantine_mode="lock-split")
    mutant = dataclasses.replace(correct, **MUTATIONS["ignore-locks"])  # type: ignore[arg-type]
    caught = [r.seed for r in run_seeds(mutant, seeds) if r.agreement_violations]
    assert 2 * len(caught) >= len(seeds), f"ignore-locks caught in {len(caught)} of {len(seeds)} seeds"
    split = 0
    for seed in seeds:
        sim = fuzz.Simulation(correct, seed)
        res = sim.run()
        assert not res.violation, f"seed {seed}: the correct core broke under lock-split"
        ls = sim.lock_split
        assert ls is not None and ls.plan is not None and ls.decider is not None
        plan, decider = ls.plan, ls.decider
        # The danger was real: one honest validator decided A in round r while all the others,
        # most of them locked on A, went on past round r+1 (where ignoring the lock forks).
        split += sim.nodes[decider].ledger[plan.epoch].round == plan.round and ls.told_ms is not None
    assert 2 * split >= len(seeds), f"the attack reached its split in {split} of {len(seeds)} seeds"


def test_a_crash_between_send_and_persist_is_what_makes_the_mutant_equivocate() -> None:
    mutant = Scenario(validators=4, byzantine=0, **MUTATIONS["send-before-persist"])  # type: ignore[arg-type]
    no_crashes = dataclasses.replace(mutant, crash_permille=0)
    assert not any(r.honest_equivocators for r in run_seeds(no_crashes, range(60)))
    assert any(r.honest_equivocators for r in run_seeds(mutant, range(200)))


# ---------------------------------------------------------------- the harness itself


def test_a_seed_replays_exactly() -> None:
    for scenario in (
        Scenario(validators=7, byzantine=2),
        Scenario(validators=7, byzantine=2, byzantine_mode="lock-split"),
    ):
        for seed in (3, 17):
            assert dataclasses.asdict(run_seed(scenario, seed)) == dataclasses.asdict(
                run_seed(scenario, seed)
            )


def test_real_ed25519_signatures_give_the_same_outcomes_as_the_fast_stand_in() -> None:
    fast = Scenario(validators=4, byzantine=1)
    real = dataclasses.replace(fast, real_signatures=True)
    for seed in range(15):
        r = run_seed(real, seed)
        assert not r.violation
        assert dataclasses.asdict(r) == dataclasses.asdict(run_seed(fast, seed))


def test_cli_prints_json_per_seed_and_totals(capsys: pytest.CaptureFixture[str]) -> None:
    status = fuzz.main(["--validators", "4", "--byzantine", "1", "--seeds", "5-9", "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0
    assert [line["seed"] for line in lines[:-1]] == [5, 6, 7, 8, 9]
    totals = lines[-1]["totals"]
    assert totals["seeds"] == 5 and totals["agreement_violations"] == 0


def test_cli_exits_non_zero_on_a_violation(capsys: pytest.CaptureFixture[str]) -> None:
    status = fuzz.main(["--validators", "4", "--byzantine", "2", "--mode", "split", "--seeds", "0-9"])
    out = capsys.readouterr().out
    assert status == 1
    assert "VIOLATION" in out and "'agreement_violations': 0" not in out


def test_clean_network_commits_in_three_message_delays() -> None:
    figure = fuzz.measure_latency(4, range(3), delay_ms=7)  # exact delays: exactly the bound
    assert figure["commit_latency_delays"] == {"p50": 3.0, "p99": 3.0, "max": 3.0}
    assert figure["lower_bound_delays"] == 3


def test_jittered_links_commit_within_three_slowest_delays() -> None:
    figure = fuzz.measure_latency(7, range(5), delay_ms=10, jitter_ms=5)
    lat = figure["commit_latency_delays"]
    assert isinstance(lat, dict)
    # Each of the three steps takes at most the slowest link delay (1.5 mean delays).
    assert 0 < lat["p50"] <= lat["max"] <= 4.5


def test_cli_runs_the_lock_split_mode(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--mode", "lock-split", "--seeds", "0-3", "--json"]
    assert fuzz.main(args) == 0
    assert fuzz.main([*args, "--mutation", "ignore-locks"]) == 1
    totals = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "totals" in line]
    assert [t["totals"]["forks"] for t in totals] == [0, 3]
