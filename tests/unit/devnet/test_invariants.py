"""Each invariant passes on a clean record set and fails on one broken the way it guards against."""

from __future__ import annotations

from dataclasses import replace

from devnet.invariants import (
    EpochRecord,
    NodeRecord,
    RunRecord,
    SignedRecord,
    check_all,
)

EPOCH_MS = 10_000
GENESIS = 1_000
EMISSION = 100
POWER = {"v0": 10, "v1": 10, "v2": 10, "v3": 10}


def _epochs(n: int, *, fork_at: int | None = None, tag: str = "") -> tuple[EpochRecord, ...]:
    out = []
    supply = GENESIS
    for e in range(1, n + 1):
        h = f"cert{e}" + (tag if fork_at is not None and e >= fork_at else "")
        out.append(
            EpochRecord(
                epoch=e,
                cert_hash=h,
                round=0,
                committed_at_ms=e * EPOCH_MS + 500,
                supply_before=supply,
                supply_after=supply + EMISSION,
                emission=EMISSION,
                slashed=0,
                rewards=(("owner0", EMISSION),),
                rewarded_proofs=(f"proof{e}",),
            )
        )
        supply += EMISSION
    return tuple(out)


def _signed(addr_seed: int, n: int) -> tuple[SignedRecord, ...]:
    return tuple(SignedRecord("prevote", e, 0, f"body{e}") for e in range(1, n + 1))


def clean_run(epochs: int = 6) -> RunRecord:
    nodes = tuple(
        NodeRecord(
            node=i,
            honest=True,
            validator_address=f"v{i}",
            running_at_end=True,
            epochs=_epochs(epochs),
            signed=_signed(i, epochs),
        )
        for i in range(4)
    )
    return RunRecord(
        genesis_supply=GENESIS,
        epoch_length_ms=EPOCH_MS,
        end_ms=(epochs + 1) * EPOCH_MS,
        power=POWER,
        nodes=nodes,
    )


def _failed(run: RunRecord) -> set[str]:
    return {name for name, v in check_all(run).items() if not v.ok}


def test_a_clean_run_passes_every_invariant() -> None:
    verdicts = check_all(clean_run())
    assert all(v.ok for v in verdicts.values()), verdicts
    assert list(verdicts) == [
        "agreement",
        "validity",
        "liveness",
        "supply",
        "accountability",
        "no_double_sign",
        "rewards_for_accepted_proofs",
    ]


def test_a_fork_breaks_agreement_and_accountability_without_convictions() -> None:
    run = clean_run()
    forked = replace(run.nodes[3], epochs=_epochs(6, fork_at=4, tag="-b"))
    run = replace(run, nodes=(*run.nodes[:3], forked))
    verdicts = check_all(run)
    assert not verdicts["agreement"].ok and "first epoch 4" in verdicts["agreement"].detail
    assert not verdicts["accountability"].ok


def test_a_fork_that_convicts_f_plus_one_is_accounted_for() -> None:
    run = clean_run()
    forked = replace(run.nodes[3], epochs=_epochs(6, fork_at=4, tag="-b"), evidence_offenders=("v1", "v2"))
    # Two Byzantine validators (v1, v2: 20 of 40 power) made the fork; honest node 0 and 3 hold evidence.
    nodes = (
        replace(run.nodes[0], evidence_offenders=("v1",)),
        replace(run.nodes[1], honest=False),
        replace(run.nodes[2], honest=False),
        forked,
    )
    verdicts = check_all(replace(run, nodes=nodes))
    assert not verdicts["agreement"].ok
    assert verdicts["accountability"].ok, verdicts["accountability"]


def test_one_convicted_validator_of_four_does_not_account_for_a_fork() -> None:
    run = clean_run()
    forked = replace(run.nodes[3], epochs=_epochs(6, fork_at=2, tag="-b"), evidence_offenders=("v1",))
    verdicts = check_all(replace(run, nodes=(*run.nodes[:3], forked)))
    assert not verdicts["accountability"].ok


def test_a_supply_leak_is_caught() -> None:
    run = clean_run()
    leaky = list(run.nodes[2].epochs)
    leaky[3] = replace(leaky[3], supply_after=leaky[3].supply_after + 1)
    run = replace(run, nodes=(*run.nodes[:2], replace(run.nodes[2], epochs=tuple(leaky)), run.nodes[3]))
    assert _failed(run) == {"supply"}


def test_a_broken_supply_chain_is_caught() -> None:
    run = clean_run()
    gap = list(run.nodes[0].epochs)
    gap[2] = replace(gap[2], supply_before=gap[2].supply_before + 5, supply_after=gap[2].supply_after + 5)
    run = replace(run, nodes=(replace(run.nodes[0], epochs=tuple(gap)), *run.nodes[1:]))
    assert _failed(run) == {"supply"}


def test_a_reward_for_a_rejected_proof_is_caught() -> None:
    run = replace(clean_run(), rejected_proofs=frozenset({"proof3"}))
    assert _failed(run) == {"rewards_for_accepted_proofs"}


def test_a_stall_after_the_heal_is_caught() -> None:
    run = clean_run(epochs=3)
    # The fault healed at 3.5 epochs; the run went on to 9 epochs; nobody committed after 3.
    run = replace(run, faults_healed_at_ms=(35_000,), end_ms=90_000)
    assert _failed(run) == {"liveness"}


def test_a_run_that_ends_right_after_the_heal_is_not_judged_a_stall() -> None:
    run = replace(clean_run(epochs=3), faults_healed_at_ms=(35_000,), end_ms=50_000)
    assert not _failed(run)


def test_a_node_that_never_commits_is_a_stall() -> None:
    run = clean_run()
    run = replace(run, nodes=(*run.nodes[:3], replace(run.nodes[3], epochs=())))
    assert "liveness" in _failed(run)


def test_a_stopped_node_is_not_required_to_commit() -> None:
    run = clean_run()
    run = replace(run, nodes=(*run.nodes[:3], replace(run.nodes[3], epochs=(), running_at_end=False)))
    assert not _failed(run)


def test_an_honest_double_sign_is_caught_and_a_byzantine_one_is_not_an_honest_failure() -> None:
    run = clean_run()
    twice = (*run.nodes[1].signed, SignedRecord("prevote", 2, 0, "other"))
    double = replace(run, nodes=(run.nodes[0], replace(run.nodes[1], signed=twice), *run.nodes[2:]))
    assert _failed(double) == {"no_double_sign"}
    liar = replace(double.nodes[1], honest=False)
    byzantine = replace(double, nodes=(double.nodes[0], liar, *double.nodes[2:]))
    assert not _failed(byzantine)


def test_a_value_that_did_not_recheck_breaks_validity() -> None:
    run = clean_run()
    bad = list(run.nodes[0].epochs)
    bad[1] = replace(bad[1], rechecked=False)
    run = replace(run, nodes=(replace(run.nodes[0], epochs=tuple(bad)), *run.nodes[1:]))
    assert _failed(run) == {"validity"}


def test_verdicts_serialise() -> None:
    doc = {k: v.as_json() for k, v in check_all(clean_run()).items()}
    assert doc["agreement"] == {"ok": True, "detail": "6 epochs, one certificate each"}
