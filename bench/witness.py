"""Witness-core benchmark: prints ONE JSON object.

Radio: witness reports validated per second through the full path (decode
the envelope bytes, check the signature, every physics rule), beside a raw
PyNaCl verify loop over the same signatures on one thread in the same run.
``ratio`` is the node's path on both cores (signatures checked in batches on
:class:`depin_p2p.verifiers.ThreadVerifier` threads while the trio loop
decodes and checks physics, several beacons in flight) against that one
core's raw verify (target >= 1.5); ``one_core_ratio`` is the same path
inline on one thread (the old measure, target 0.6). Each report is a
distinct (beacon, witness) pair and the per-cell geometry cache is cleared
before every timed pass, so nothing is reused that a node would not reuse;
each beacon is decoded and checked once inside the timed loop, as a node
does. ``pools`` compares the raw verify rate of the same signatures in
batches of 64 on 2 threads (trio.to_thread with a capacity limiter) and on a
2-process pool, both driven from trio.

Compute: at n = 256, the provider's time to answer a challenge (derive A, B,
multiply, encode) against the witness's time to verify the response (decode
and check the signed envelope, hash the product, Freivalds with k rounds).
The witness derives A, B, its private Freivalds vectors R and A·(B·R) when it
issues the challenge, while the provider works; that time is reported
separately ("witness_precompute_ms"), and the ratio with it included too.

Run: ``.venv/bin/python bench/witness.py [--reports N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h3.api.basic_int as h3
import trio
from nacl.signing import VerifyKey

from depin_p2p import verifiers, wire
from depin_p2p.crypto import KeyPair
from depin_p2p.model import Device, DeviceKind
from depin_p2p.witness import compute, radio

NETWORK = "depin-bench"
BEACON_TYPE_ID = wire.info_of(radio.Beacon).type_id


class Registry:
    def __init__(self) -> None:
        self.devices: dict[bytes, Device] = {}

    def get_device(self, device_id: bytes) -> Device | None:
        return self.devices.get(device_id)


def _key(label: str) -> KeyPair:
    return KeyPair.from_seed(hashlib.blake2b(label.encode(), digest_size=32).digest())


def _radio(reg: Registry, k: KeyPair, cell: int) -> Device:
    d = Device(
        k.public_key,
        _key("owner" + k.public_key.hex()).public_key,
        DeviceKind.RADIO,
        cell,
        915_000_000,
        2_700,
        300,
        0,
        0,
    )
    reg.devices[d.device_id] = d
    return d


def build_radio(n_beacons: int, per_beacon: int) -> tuple[Registry, list[tuple[bytes, list[bytes]]]]:
    """Beacons and honest reports as encoded envelope bytes, every pair distinct."""
    reg = Registry()
    origin = h3.latlng_to_cell(37.70, -122.45, 12)
    lat0, lng0 = h3.cell_to_latlng(origin)
    witnesses = []
    for i in range(per_beacon * 4):
        # A grid of witness sites 1.1-4 km apart, so every beacon has plenty in range.
        lat, lng = lat0 + 0.01 * (i % 20), lng0 + 0.012 * (i // 20)
        witnesses.append((_key(f"w{i}"), _radio(reg, _key(f"w{i}"), h3.latlng_to_cell(lat, lng, 12))))
    out = []
    for b in range(n_beacons):
        bk = _key(f"b{b}")
        # Beacons sit between witness sites (>= 700 m from any), each at its own spot.
        blat, blng = lat0 + 0.005 + 0.01 * (b % 20), lng0 + 0.006 + 0.012 * (b // 20 % 20) + 1e-5 * (b // 400)
        bdev = _radio(reg, bk, h3.latlng_to_cell(blat, blng, 12))
        beacon = radio.Beacon(
            bk.public_key,
            1,
            b,
            bdev.location,
            bdev.frequency_hz,
            bdev.tx_power_cdbm,
            bdev.gain_cdbi,
            1_000_000,
        )
        benv = wire.seal(beacon, bk, NETWORK)
        bid = radio.beacon_id(benv)
        reports = []
        start = (b * 7) % len(witnesses)
        for j in range(per_beacon):
            wk, wdev = witnesses[(start + j) % len(witnesses)]
            bound = radio.rssi_bound_cdbm(bdev, wdev)
            rep = radio.WitnessReport(
                wk.public_key, bid, bound - 500 - j, 600, 915_000_000 + j, 1_000_100 + j
            )
            reports.append(wire.encode(wire.seal(rep, wk, NETWORK)))
        out.append((wire.encode(benv), reports))
    return reg, out


def full_path(reg: Registry, data: list[tuple[bytes, list[bytes]]]) -> int:
    radio._GEO_CACHE.clear()  # no geometry carried over between passes
    accepted = 0
    for beacon_bytes, reports in data:
        benv = wire.decode_as(beacon_bytes, wire.Envelope)
        checked = radio.validate_beacon(benv, registry=reg, network_id=NETWORK)
        seen: set[bytes] = set()
        for blob in reports:
            env = wire.decode_as(blob, wire.Envelope)
            ok = radio.validate_witness_report(checked, env, registry=reg, network_id=NETWORK, seen=seen)
            seen.add(ok.report.witness)
            accepted += 1
    return accepted


def raw_inputs(data: list[tuple[bytes, list[bytes]]]) -> list[tuple[VerifyKey, bytes, bytes]]:
    out = []
    for _, reports in data:
        for blob in reports:
            env = wire.decode_as(blob, wire.Envelope)
            signed = wire.signing_bytes(NETWORK, wire.Domain.WITNESS, radio.WITNESS_REPORT_TYPE_ID, env.body)
            out.append((VerifyKey(env.signer), signed, env.signature))
    return out


def raw_verify(items: list[tuple[VerifyKey, bytes, bytes]]) -> int:
    for vk, signed, sig in items:
        vk.verify(signed, sig)
    return len(items)


async def _two_core_path(
    reg: Registry, data: list[tuple[bytes, list[bytes]]], verifier: verifiers.ThreadVerifier, in_flight: int
) -> int:
    """The node's shape: per beacon, decode and screen on the loop, one batch to the threads, then physics."""
    radio._GEO_CACHE.clear()
    cache = wire.SignatureCache()
    accepted = 0
    todo = iter(data)

    async def worker() -> None:
        nonlocal accepted
        for beacon_bytes, reports in todo:
            benv = wire.decode_as(beacon_bytes, wire.Envelope)
            envs = [wire.decode_as(blob, wire.Envelope) for blob in reports]
            signed = wire.signing_bytes(NETWORK, wire.Domain.BEACON, BEACON_TYPE_ID, benv.body)
            items = [(benv.signer, signed, benv.signature)]
            items += [(e.signer, radio._report_signing_bytes(NETWORK, e.body), e.signature) for e in envs]
            await verifiers.warm(cache, verifier, items)
            checked = radio.validate_beacon(
                benv, registry=reg, network_id=NETWORK, verify=cache.verify
            )
            seen: set[bytes] = set()
            for env in envs:
                ok = radio.validate_witness_report(
                    checked, env, registry=reg, network_id=NETWORK, seen=seen, verify=cache.verify
                )
                seen.add(ok.report.witness)
                accepted += 1

    async with trio.open_nursery() as nursery:
        for _ in range(in_flight):
            nursery.start_soon(worker)
    return accepted


def _chunks(items: list[tuple[bytes, bytes, bytes]], size: int) -> list[list[tuple[bytes, bytes, bytes]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _pool_rate(items: list[tuple[bytes, bytes, bytes]], use_processes: bool) -> float:
    """Raw verifies per second of ``items`` in batches of 64, two workers, driven from trio."""
    limiter = trio.CapacityLimiter(2)
    batches = _chunks(items, 64)
    with concurrent.futures.ProcessPoolExecutor(2) as procs:
        list(procs.map(verifiers.check_batch, batches[:2]))  # start the workers before timing

        async def one(batch: list[tuple[bytes, bytes, bytes]]) -> None:
            if use_processes:
                ok = await trio.to_thread.run_sync(
                    lambda: procs.submit(verifiers.check_batch, batch).result(), limiter=limiter
                )
            else:
                ok = await trio.to_thread.run_sync(verifiers.check_batch, batch, limiter=limiter)
            assert all(ok)

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for batch in batches:
                nursery.start_soon(one, batch)
        return len(items) / (time.perf_counter() - t0)


def bench_radio(reports: int, repeat: int) -> dict[str, object]:
    per_beacon = 40
    reg, data = build_radio(max(1, reports // per_beacon), per_beacon)
    items = raw_inputs(data)
    plain = [(bytes(vk), signed, sig) for vk, signed, sig in items]
    n = len(items)
    verifier = verifiers.ThreadVerifier(threads=2)
    best_full = best_raw = best_two = float("inf")
    best_threads = best_procs = 0.0
    for _ in range(repeat):  # interleaved, best of each: all see the same machine state
        t0 = time.perf_counter()
        assert full_path(reg, data) == n
        t1 = time.perf_counter()
        raw_verify(items)
        t2 = time.perf_counter()
        assert trio.run(_two_core_path, reg, data, verifier, 4) == n
        t3 = time.perf_counter()
        best_full, best_raw = min(best_full, t1 - t0), min(best_raw, t2 - t1)
        best_two = min(best_two, t3 - t2)
        best_threads = max(best_threads, trio.run(_pool_rate, plain, False))
        best_procs = max(best_procs, trio.run(_pool_rate, plain, True))
    full_rate, raw_rate, two_rate = n / best_full, n / best_raw, n / best_two
    return {
        "reports": n,
        "beacons": len(data),
        "full_path_reports_per_s": round(two_rate),
        "full_path_one_core_reports_per_s": round(full_rate),
        "raw_pynacl_verifies_per_s": round(raw_rate),
        "ratio": round(two_rate / raw_rate, 3),
        "target_ratio": 1.5,
        "met": two_rate / raw_rate >= 1.5,
        "one_core_ratio": round(full_rate / raw_rate, 3),
        "pools": {
            "threads_2_verifies_per_s": round(best_threads),
            "processes_2_verifies_per_s": round(best_procs),
            "threads_over_processes": round(best_threads / best_procs, 3),
        },
    }


def bench_compute(n: int, repeat: int) -> dict[str, object]:
    reg = Registry()
    wk, pk = _key("cw"), _key("cp")
    prov = Device(pk.public_key, _key("cpo").public_key, DeviceKind.COMPUTE, 0, 0, 0, 0, 1, 0)
    reg.devices[prov.device_id] = prov
    ch = compute.Challenge(wk.public_key, pk.public_key, 1, b"\x42" * 32, n, compute.MODULUS, 0, 10**9)
    ch_env = wire.seal(ch, wk, NETWORK)
    provider_s = derive_s = verify_s = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        resp_env = wire.seal(compute.respond(ch, ch_env), pk, NETWORK)
        t1 = time.perf_counter()
        pending = compute.prepare_challenge(ch_env, witness_secret=b"bench-witness")
        t2 = time.perf_counter()
        compute.validate_response(pending, resp_env, registry=reg, network_id=NETWORK, now_ms=1)
        t3 = time.perf_counter()
        provider_s, derive_s, verify_s = (
            min(provider_s, t1 - t0),
            min(derive_s, t2 - t1),
            min(verify_s, t3 - t2),
        )
    return {
        "n": n,
        "rounds": compute.DEFAULT_ROUNDS,
        "response_bytes": len(wire.encode(resp_env)),
        "provider_ms": round(provider_s * 1e3, 3),
        "verify_ms": round(verify_s * 1e3, 3),
        "witness_precompute_ms": round(derive_s * 1e3, 3),
        "ratio": round(provider_s / verify_s, 1),
        "ratio_including_precompute": round(provider_s / (verify_s + derive_s), 1),
        "target_ratio": 20,
        "met": provider_s / verify_s >= 20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    result = {
        "bench": "witness",
        "python": sys.version.split()[0],
        "radio": bench_radio(args.reports, args.repeat),
        "compute": bench_compute(args.n, args.repeat),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
