"""Radio proof of coverage: beacons, witness reports and their validation. [pure]

A radio device signs a :class:`Beacon`; devices that hear it sign a
:class:`WitnessReport` naming the beacon by its id, ``content_id`` of the
beacon envelope's *body* (the canonical encoding of the beacon). The body,
not the whole envelope, so the id is fixed by what was said, whoever relays
it; the signature is checked once in :func:`validate_beacon`.

The node checks a beacon once (:func:`validate_beacon` returns a
:class:`CheckedBeacon` carrying the per-beacon work: signature, registry
lookup, position, EIRP, log of the frequency) and then any number of reports
against it (:func:`validate_witness_report`).

Every rule re-checked by consensus uses signed fields and the registry only.
The node-local clock check (a report reaching us far outside the window) is
separate: :func:`validate_report_arrival`, raising ``Ignore``.

Geometry and physics are integer-only, so every validator reaches the same
verdict on a borderline witness:

* positions are H3 cell centres, quantised once to integer micro-degrees;
* the great-circle distance is a haversine in 2^-64 fixed point, with sine
  and arcsine from their Taylor series (integer arithmetic, truncating
  division), on a sphere of radius 6,371,008.8 m, floored to millimetres;
* FSPL = 20·log10(4π·d·f/c) in centi-dB from an integer binary logarithm
  (bit length, then a 257-entry table with linear interpolation), floored;
* "8 cells apart" is ``h3.grid_distance`` between resolution-11 parents,
  which is integer index arithmetic in the H3 C library.

Residual float dependence: only the quantisation of a cell centre to
micro-degrees (``h3.cell_to_latlng`` uses libm trigonometry). Rounding to
1e-6 degree (~0.11 m) can differ between machines only if the exact centre
lies within one float ulp (~1e-14 degree) of a rounding boundary, about one
cell in 10^8; and the registry holds few cells, each quantised the same way
every time on a given machine. Accepted; removing it would need an
integer re-implementation of H3's face-to-geo projection.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from math import isqrt
from typing import Final

import h3.api.basic_int as h3
from h3 import H3BaseException

from depin_p2p import wire
from depin_p2p.errors import CodecError, Ignore, Reject
from depin_p2p.model import CentiDb, Device, DeviceKind, DeviceRegistry, validate_device

BEACON_TYPE_ID: Final = 32
WITNESS_REPORT_TYPE_ID: Final = 33

# Defaults of DESIGN.md, "Proofs and witnessing".
WINDOW_MS: Final = 180_000
MAX_FREQUENCY_DELTA_HZ: Final = 100_000
MIN_CELL_DISTANCE: Final = 8
CELL_DISTANCE_RESOLUTION: Final = 11
MAX_DISTANCE_M: Final = 100_000
# How far outside the window (by the node's own clock) gossip still relays a report.
ARRIVAL_SLACK_MS: Final = 60_000


@wire.message(type_id=BEACON_TYPE_ID, domain=wire.Domain.BEACON)
@dataclass(frozen=True, slots=True)
class Beacon:
    """A radio device's beacon, signed by the device itself (Domain.BEACON).

    Location, frequency, tx power and gain must equal the device's registry
    entry; they are repeated so a witness can check what it heard.
    """

    device: wire.PublicKeyBytes
    epoch: wire.U64
    nonce: wire.U64
    location: wire.U64  # H3 cell, resolution 12
    frequency_hz: wire.U64
    tx_power_cdbm: CentiDb
    gain_cdbi: CentiDb
    sent_at_ms: wire.U64


@wire.message(type_id=WITNESS_REPORT_TYPE_ID, domain=wire.Domain.WITNESS)
@dataclass(frozen=True, slots=True)
class WitnessReport:
    """What a witness device heard, signed by that device (Domain.WITNESS).

    ``beacon_id`` is :func:`beacon_id` of the beacon's envelope.
    """

    witness: wire.PublicKeyBytes
    beacon_id: wire.Bytes32
    rssi_cdbm: CentiDb
    snr_cdb: CentiDb
    frequency_hz: wire.U64
    received_at_ms: wire.U64


@dataclass(frozen=True, slots=True)
class RadioParams:
    """Validation constants (DESIGN.md defaults). Consensus uses the defaults."""

    window_ms: int = WINDOW_MS
    max_frequency_delta_hz: int = MAX_FREQUENCY_DELTA_HZ
    min_cell_distance: int = MIN_CELL_DISTANCE
    max_distance_m: int = MAX_DISTANCE_M
    arrival_slack_ms: int = ARRIVAL_SLACK_MS


DEFAULT_PARAMS: Final = RadioParams()


def beacon_id(envelope: wire.Envelope) -> bytes:
    """The id witness reports use for a beacon: BLAKE2b-256 of the envelope body."""
    return wire.content_id(envelope.body)


# --------------------------------------------------------------------------
# Integer geometry

_FRAC: Final = 64
_ONE: Final = 1 << _FRAC
# π and log10(2) to 50 decimals, scaled to 2^-64 (exact integer constants).
PI_FP: Final = 314159265358979323846264338327950288419716939937510 * _ONE // 10**50
LOG10_2_FP: Final = 30102999566398119521373889472449302676818988146211 * _ONE // 10**50
EARTH_RADIUS_MM: Final = 6_371_008_800  # IUGG mean radius
SPEED_OF_LIGHT_M_S: Final = 299_792_458
MICRO_DEG: Final = 1_000_000
_HALF_PI_FP: Final = PI_FP // 2


def _rad_fp(micro_deg: int) -> int:
    """Micro-degrees to radians in 2^-64 fixed point (truncating toward zero)."""
    neg = micro_deg < 0
    r = abs(micro_deg) * PI_FP // (180 * MICRO_DEG)
    return -r if neg else r


def sin_fp(x: int) -> int:
    """sin(x) for |x| ≤ π/2 in 2^-64 fixed point: Taylor series, truncated terms.

    Each term is ``t_k = t_{k-1}·x² / ((2k)(2k+1))`` on magnitudes, floored,
    summed with alternating signs until a term is zero.
    """
    neg = x < 0
    x = abs(x)
    x2 = x * x >> _FRAC
    term, total, k = x, x, 1
    while term:
        term = (term * x2 >> _FRAC) // ((2 * k) * (2 * k + 1))
        total = total - term if k % 2 else total + term
        k += 1
    return -total if neg else total


def cos_fp(x: int) -> int:
    """cos(x) for |x| ≤ π/2 in 2^-64 fixed point, as sin(π/2 - |x|)."""
    return sin_fp(_HALF_PI_FP - abs(x))


def asin_fp(x: int) -> int:
    """asin(x) for 0 ≤ x ≤ 0.2 in 2^-64 fixed point: Taylor series, truncated terms.

    ``t_k = t_{k-1}·x²·(2k-1)² / ((2k)(2k+1))``, summed until a term is zero.
    """
    x2 = x * x >> _FRAC
    term, total, k = x, x, 1
    while term:
        term = (term * x2 >> _FRAC) * (2 * k - 1) ** 2 // ((2 * k) * (2 * k + 1))
        total += term
        k += 1
    return total


@dataclass(frozen=True, slots=True)
class CellGeo:
    """A cell's centre in integer micro-degrees, cos(latitude), and its res-11 parent."""

    cell: int
    lat_ud: int
    lng_ud: int
    cos_lat_fp: int
    parent11: int


_GEO_CACHE: dict[int, CellGeo] = {}
_GEO_CACHE_CAP: Final = 1 << 16


def cell_geo(cell: int) -> CellGeo:
    """Quantised geometry of an H3 cell (memoised). Raises Reject('bad_location')."""
    geo = _GEO_CACHE.get(cell)
    if geo is None:
        try:
            valid = h3.is_valid_cell(cell) and h3.get_resolution(cell) >= CELL_DISTANCE_RESOLUTION
            if valid:
                lat, lng = h3.cell_to_latlng(cell)
                parent = h3.cell_to_parent(cell, CELL_DISTANCE_RESOLUTION)
        except (H3BaseException, ValueError, TypeError, OverflowError) as exc:
            raise Reject("bad_location", f"{cell:#x}: {exc}") from None
        if not valid:
            raise Reject("bad_location", f"{cell:#x} is not an H3 cell of resolution ≥ 11")
        lat_ud, lng_ud = round(lat * MICRO_DEG), round(lng * MICRO_DEG)
        geo = CellGeo(cell, lat_ud, lng_ud, cos_fp(_rad_fp(lat_ud)), parent)
        if len(_GEO_CACHE) >= _GEO_CACHE_CAP:
            _GEO_CACHE.clear()
        _GEO_CACHE[cell] = geo
    return geo


# Beyond this the exact distance is never needed: everything farther is "too far".
_FAR_LIMIT_MM: Final = 1_000_000_000  # 1000 km
_SIN_FAR_FP: Final = sin_fp(_FAR_LIMIT_MM * _ONE // (2 * EARTH_RADIUS_MM))
_HAV_FAR_FP: Final = _SIN_FAR_FP * _SIN_FAR_FP >> _FRAC


def distance_mm(a: CellGeo, b: CellGeo) -> int | None:
    """Great-circle distance between two cell centres in millimetres, floored.

    Returns None when farther than 1000 km (the exact value is never needed
    there). Integer haversine: hav = sin²(Δφ/2) + cosφ1·cosφ2·sin²(Δλ/2),
    d = 2R·asin(√hav).
    """
    dlat = b.lat_ud - a.lat_ud
    if abs(dlat) > 9 * MICRO_DEG:  # 9° of latitude is ~1000 km: skip the series
        return None
    dlng = (b.lng_ud - a.lng_ud + 180 * MICRO_DEG) % (360 * MICRO_DEG) - 180 * MICRO_DEG
    s_lat = sin_fp(_rad_fp(dlat) // 2)
    s_lng = sin_fp(_rad_fp(dlng) // 2)
    cos_product = a.cos_lat_fp * b.cos_lat_fp >> _FRAC
    hav = (s_lat * s_lat >> _FRAC) + (cos_product * (s_lng * s_lng >> _FRAC) >> _FRAC)
    if hav > _HAV_FAR_FP:
        return None
    return 2 * EARTH_RADIUS_MM * asin_fp(isqrt(hav << _FRAC)) >> _FRAC


LOG_FRAC: Final = 32
_P: Final = 62
_TABLE_BITS: Final = 8
_INTERP_BITS: Final = LOG_FRAC - _TABLE_BITS


def _log2_by_squaring(n: int) -> int:
    """log2(n), n ≥ 1, in 2^-32 fixed point by bit length plus repeated squaring.

    The mantissa is held in 62-bit fixed point; each squaring (truncating)
    yields one fractional bit. Used to build the interpolation table.
    """
    e = n.bit_length() - 1
    y = n << (_P - e) if e <= _P else n >> (e - _P)
    frac = 0
    two = 2 << _P
    for _ in range(LOG_FRAC):
        y = y * y >> _P
        frac <<= 1
        if y >= two:
            y >>= 1
            frac |= 1
    return (e << LOG_FRAC) | frac


# log2(1 + i/256) for i = 0..256 in 2^-32 fixed point.
_LOG2_TABLE: Final = tuple(
    _log2_by_squaring((1 << _TABLE_BITS) + i) - (_TABLE_BITS << LOG_FRAC)
    for i in range((1 << _TABLE_BITS) + 1)
)


def log2_fp(n: int) -> int:
    """log2(n) of an integer n ≥ 1 in 2^-32 fixed point, libm-free.

    Integer part from the bit length. The mantissa, cut to 32 bits after its
    leading one (truncating), indexes a 257-entry table of log2(1 + i/256)
    (built by repeated squaring) with its top 8 bits; the other 24 bits
    interpolate linearly between two entries (truncating). Error < 3e-6.
    """
    if n < 1:
        raise ValueError("log2 of a non-positive number")
    e = n.bit_length() - 1
    m = n << (LOG_FRAC - e) if e <= LOG_FRAC else n >> (e - LOG_FRAC)
    idx = (m >> _INTERP_BITS) - (1 << _TABLE_BITS)
    lo, hi = _LOG2_TABLE[idx], _LOG2_TABLE[idx + 1]
    return (e << LOG_FRAC) + lo + ((hi - lo) * (m & ((1 << _INTERP_BITS) - 1)) >> _INTERP_BITS)


# log2(4π / (1000·c)): the constant part of FSPL with d in mm and f in Hz.
_LOG2_FSPL_CONST: Final = (log2_fp(4 * PI_FP) - (_FRAC << LOG_FRAC)) - log2_fp(1000 * SPEED_OF_LIGHT_M_S)


def fspl_cdb_from_logs(log2_d_mm: int, log2_f_hz: int) -> int:
    """FSPL in centi-dB from the fixed-point log2 of distance (mm) and frequency (Hz), floored."""
    total = log2_d_mm + log2_f_hz + _LOG2_FSPL_CONST
    return (2000 * total * LOG10_2_FP) >> (LOG_FRAC + _FRAC)


def fspl_cdb(d_mm: int, frequency_hz: int) -> int:
    """Free-space path loss 20·log10(4π·d·f/c) in integer centi-dB (d in mm, f in Hz)."""
    return fspl_cdb_from_logs(log2_fp(max(d_mm, 1)), log2_fp(max(frequency_hz, 1)))


def is_too_close(a: CellGeo, b: CellGeo, d_mm: int, min_cells: int = MIN_CELL_DISTANCE) -> bool:
    """True when the res-11 parents of two cells are fewer than ``min_cells`` apart.

    Past 2 km no two res-11 cells are within 8 steps (each step is < 70 m),
    so the grid is only walked when close. Near one of H3's 12 pentagons the
    grid distance may be undefined; then the average res-11 spacing (43 m)
    times ``min_cells`` stands in, which is deterministic too.
    """
    if d_mm > 2_000_000 + 70_000 * max(0, min_cells - 8):
        return False
    try:
        return bool(h3.grid_distance(a.parent11, b.parent11) < min_cells)
    except H3BaseException:
        return d_mm < 43_000 * min_cells


# --------------------------------------------------------------------------
# Validation


@dataclass(frozen=True, slots=True)
class CheckedBeacon:
    """A beacon whose signature and registry entry checked out, with its per-beacon work."""

    beacon: Beacon
    beacon_id: bytes
    device: Device
    envelope: wire.Envelope
    geo: CellGeo
    eirp_cdbm: int  # tx power + antenna gain, from the registry
    log2_frequency: int


@dataclass(frozen=True, slots=True)
class CheckedReport:
    """A valid witness report with the figures the checks computed."""

    report: WitnessReport
    envelope: wire.Envelope
    device: Device
    distance_m: int
    rssi_bound_cdbm: int


_PREFIXES: dict[str, bytes] = {}


def _report_signing_bytes(network_id: str, body: bytes) -> bytes:
    """``wire.signing_bytes`` for a WitnessReport, with the constant prefix memoised per network."""
    prefix = _PREFIXES.get(network_id)
    if prefix is None:
        full = wire.signing_bytes(network_id, wire.Domain.WITNESS, WITNESS_REPORT_TYPE_ID, b"")
        prefix = full[:-4]  # drop the empty body's u32 length
        if len(_PREFIXES) >= 64:
            _PREFIXES.clear()
        _PREFIXES[network_id] = prefix
    return prefix + len(body).to_bytes(4, "big") + body


def validate_beacon(
    envelope: wire.Envelope,
    *,
    registry: DeviceRegistry,
    network_id: str,
    epoch: int | None = None,
    now_ms: int | None = None,
    params: RadioParams = DEFAULT_PARAMS,
    verify: wire.Verifier = wire.verify_signature,
) -> CheckedBeacon:
    """Check a signed beacon once; reports are then checked against the result.

    Args:
        envelope: the beacon's signed envelope.
        registry: registered devices.
        network_id: this network.
        epoch: if given, the epoch the beacon must belong to.
        now_ms: the node's clock (gossip only), or None to skip the
            local-clock check of :func:`validate_report_arrival`.
        params: validation constants.

    Raises:
        Reject: ``wrong_network``, ``malformed``, ``wrong_domain``,
            ``bad_signature`` (from the envelope); ``wrong_signer`` (the
            beacon names another device than its signer); ``unknown_device``;
            ``not_a_radio``; ``beacon_mismatch`` (location, frequency, tx
            power or gain differ from the registry); ``bad_device_params``
            (the registered device is outside ``model.validate_device``'s
            bounds); ``bad_location``;
            ``wrong_epoch``.
        Ignore: ``arrived_too_late`` / ``arrived_too_early`` (only with ``now_ms``).
    """
    verified = wire.open_envelope(envelope, network_id=network_id, domain=wire.Domain.BEACON, verify=verify)
    beacon = verified.message
    if not isinstance(beacon, Beacon):
        raise Reject("malformed", f"expected a Beacon, got {type(beacon).__name__}")
    if beacon.device != envelope.signer:
        raise Reject("wrong_signer", "beacon signed by another key than its device")
    if epoch is not None and beacon.epoch != epoch:
        raise Reject("wrong_epoch", f"beacon of epoch {beacon.epoch}, expected {epoch}")
    if now_ms is not None:
        validate_report_arrival(beacon, now_ms, params)
    device = registry.get_device(beacon.device)
    if device is None:
        raise Reject("unknown_device", "beaconing device is not registered")
    if device.kind is not DeviceKind.RADIO:
        raise Reject("not_a_radio", "beaconing device is not a radio device")
    # The FSPL bound trusts the registered power and gains: never a device outside the bounds.
    validate_device(device)
    declared = (beacon.location, beacon.frequency_hz, beacon.tx_power_cdbm, beacon.gain_cdbi)
    registered = (device.location, device.frequency_hz, device.tx_power_cdbm, device.gain_cdbi)
    if declared != registered:
        raise Reject("beacon_mismatch", f"beacon declares {declared}, registry has {registered}")
    return CheckedBeacon(
        beacon=beacon,
        beacon_id=beacon_id(envelope),
        device=device,
        envelope=envelope,
        geo=cell_geo(device.location),
        eirp_cdbm=device.tx_power_cdbm + device.gain_cdbi,
        log2_frequency=log2_fp(max(device.frequency_hz, 1)),
    )


_PATH_CACHE: dict[tuple[int, int, int, int], tuple[int | None, bool, int]] = {}
_PATH_CACHE_CAP: Final = 1 << 16


def path_terms(
    a: CellGeo, b: CellGeo, log2_frequency: int, params: RadioParams = DEFAULT_PARAMS
) -> tuple[int | None, bool, int]:
    """The path between a beaconer's cell ``a`` and a witness's cell ``b`` (memoised).

    Returns ``(d_mm, too_close, fspl_cdb)``: :func:`distance_mm`, :func:`is_too_close`
    with ``params.min_cell_distance`` and the free-space loss at ``log2_frequency``
    (2^-32 fixed point); ``(None, False, 0)`` beyond 1000 km. A pure function of its
    arguments: the same devices witness each other every epoch, so each pair's
    haversine and grid walk is computed once, not once per report and per check.
    """
    key = (a.cell, b.cell, log2_frequency, params.min_cell_distance)
    got = _PATH_CACHE.get(key)
    if got is None:
        d_mm = distance_mm(a, b)
        if d_mm is None:
            got = (None, False, 0)
        else:
            too_close = is_too_close(a, b, d_mm, params.min_cell_distance)
            got = (d_mm, too_close, fspl_cdb_from_logs(log2_fp(max(d_mm, 1)), log2_frequency))
        if len(_PATH_CACHE) >= _PATH_CACHE_CAP:
            _PATH_CACHE.clear()
        _PATH_CACHE[key] = got
    return got


def validate_witness_report(
    beacon: CheckedBeacon,
    envelope: wire.Envelope,
    *,
    registry: DeviceRegistry,
    network_id: str,
    seen: Collection[bytes] = (),
    now_ms: int | None = None,
    params: RadioParams = DEFAULT_PARAMS,
    verify: wire.Verifier = wire.verify_signature,
    decoded: WitnessReport | None = None,
) -> CheckedReport:
    """Check one signed witness report against an already checked beacon.

    Only signed fields and the registry decide, so consensus can re-check a
    report years later and reach the same verdict; pass ``now_ms`` (gossip
    does, consensus does not) to also apply :func:`validate_report_arrival`.

    Args:
        beacon: the result of :func:`validate_beacon` for ``report.beacon_id``.
        envelope: the report's signed envelope.
        registry: registered devices.
        network_id: this network; other networks' signatures never verify.
        seen: witness device ids already accepted for this beacon.
        now_ms: the node's clock, or None to skip the local-clock check.
        params: validation constants.
        verify: the signature check (the node's :class:`~depin_p2p.wire.SignatureCache`).
        decoded: ``envelope.body`` already decoded by the caller (from these very bytes),
            so it is not decoded twice.

    Returns:
        The checked report with its distance and rssi bound.

    Raises:
        Reject: ``wrong_network``, ``malformed``, ``wrong_signer``,
            ``wrong_beacon``, ``unknown_device``, ``not_a_radio``,
            ``self_witness``, ``same_owner``, ``bad_signature``, ``stale``,
            ``frequency_mismatch``, ``too_far``, ``too_close``,
            ``rssi_above_fspl_bound``, ``bad_location``, ``bad_device_params``.
        Ignore: ``duplicate``; ``arrived_too_late`` / ``arrived_too_early``
            (only with ``now_ms``).
    """
    if envelope.network_id != network_id:
        raise Reject("wrong_network", f"envelope for {envelope.network_id!r}")
    report = decoded
    if report is None:
        try:
            report = wire.decode_as(envelope.body, WitnessReport)
        except CodecError as exc:
            raise Reject("malformed", str(exc)) from None
    if report.witness != envelope.signer:
        raise Reject("wrong_signer", "report signed by another key than its witness")
    if report.beacon_id != beacon.beacon_id:
        raise Reject("wrong_beacon", "report names another beacon")
    if now_ms is not None:
        validate_report_arrival(beacon.beacon, now_ms, params)
    if report.witness == beacon.beacon.device:
        raise Reject("self_witness", "a device cannot witness its own beacon")
    device = registry.get_device(report.witness)
    if device is None:
        raise Reject("unknown_device", "witness device is not registered")
    if device.kind is not DeviceKind.RADIO:
        raise Reject("not_a_radio", "witness device is not a radio device")
    validate_device(device)
    if device.owner == beacon.device.owner:
        # Registration is free: without this one account mints beaconer and witness shares
        # for itself from a ring of its own devices.
        raise Reject("same_owner", "the witness device belongs to the beaconer's owner")
    if report.witness in seen:
        raise Ignore("duplicate", "this witness already reported this beacon")
    signed = _report_signing_bytes(network_id, envelope.body)
    verify(envelope.signer, signed, envelope.signature)
    sent = beacon.beacon.sent_at_ms
    if not sent <= report.received_at_ms <= sent + params.window_ms:
        window = f"[{sent}, {sent + params.window_ms}]"
        raise Reject("stale", f"received_at {report.received_at_ms} outside {window}")
    if abs(report.frequency_hz - beacon.beacon.frequency_hz) > params.max_frequency_delta_hz:
        raise Reject("frequency_mismatch", f"{report.frequency_hz} Hz vs {beacon.beacon.frequency_hz} Hz")
    d_mm, too_close, fspl = path_terms(beacon.geo, cell_geo(device.location), beacon.log2_frequency, params)
    if d_mm is None or d_mm // 1000 > params.max_distance_m:
        shown = "> 1000 km" if d_mm is None else f"{d_mm // 1000} m"
        raise Reject("too_far", f"{shown} > {params.max_distance_m} m")
    if too_close:
        raise Reject("too_close", f"fewer than {params.min_cell_distance} res-11 cells apart")
    bound = beacon.eirp_cdbm + device.gain_cdbi - fspl
    if report.rssi_cdbm > bound:
        raise Reject("rssi_above_fspl_bound", f"rssi {report.rssi_cdbm} > bound {bound} centi-dBm")
    return CheckedReport(report, envelope, device, d_mm // 1000, bound)


def rssi_bound_cdbm(beaconer: Device, witness: Device) -> int:
    """The highest rssi (centi-dBm) ``witness`` may report for a beacon of ``beaconer``.

    Raises Reject('bad_location') if either location is not a valid cell, and
    Reject('too_far') beyond 1000 km (where no bound is computed).
    """
    a, b = cell_geo(beaconer.location), cell_geo(witness.location)
    d_mm = distance_mm(a, b)
    if d_mm is None:
        raise Reject("too_far", "> 1000 km")
    eirp = beaconer.tx_power_cdbm + beaconer.gain_cdbi
    return eirp + witness.gain_cdbi - fspl_cdb(d_mm, beaconer.frequency_hz)


def validate_report_arrival(beacon: Beacon, now_ms: int, params: RadioParams = DEFAULT_PARAMS) -> None:
    """Gossip-only check by the node's own clock; consensus never calls it.

    Raises:
        Ignore: ``arrived_too_late`` when ``now_ms`` is past the beacon's
            window by more than the slack; ``arrived_too_early`` when the
            beacon claims a send time further in the future than the slack.
    """
    if now_ms > beacon.sent_at_ms + params.window_ms + params.arrival_slack_ms:
        raise Ignore("arrived_too_late", f"now {now_ms}, beacon sent at {beacon.sent_at_ms}")
    if now_ms + params.arrival_slack_ms < beacon.sent_at_ms:
        raise Ignore("arrived_too_early", f"now {now_ms}, beacon sent at {beacon.sent_at_ms}")
