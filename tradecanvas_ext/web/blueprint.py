"""The market HTTP API of contract section 3, as a Flask blueprint over the app's Runtime. Views parse,
call the runtime and shape JSON; they never read env or files, never build error responses (they raise)."""
from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request

from ..backfill.health import status_only
from ..domain import align_down, align_up, expected_latest_closed_time
from .errors import BadParameter, BadRequest, int_arg, parse_int, parse_series, series_arg, token_ok

log = logging.getLogger(__name__)

bp = Blueprint("market", __name__, url_prefix="/api/market")

TAIL_ANSWERS = "tradecanvas.tail_answers"  # app.extensions key of the app's TailAnswers
# WSGI environ key: (series, limit, coverage, seq) of a tail check tail_front.py ran and found nothing kept for
TAIL_CHECKED = "tradecanvas.tail_checked"
DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
MAX_GAPS_WINDOW_CANDLES = 5_000_000  # bounds the work of one /gaps call
MAX_BACKFILL_CANDLES = 100_000  # bounds one explicit repair
_BACKFILL_FIELDS = ("series_id", "start", "end")


def runtime():
    return current_app.extensions["tradecanvas.runtime"]


def _window_candles(start: int, end: int, tf: int) -> int:
    """Aligned candle times in [start, end]."""
    s, e = align_up(start, tf), align_down(end, tf)
    return 0 if e < s else (e - s) // tf + 1


def kept_tail(rt, answers, sid, limit: int):
    """The tail read's first part, shared by the view and tail_front.py: the tail check (it may repair),
    then the series' write sequence, then the body kept at exactly that sequence (None when there is none).
    The sequence is read AFTER the check (which may write) and BEFORE any read, so a body built on a miss
    is at least that new. A body whose check found the same window whole, with no write since, skips the
    check: the check would read the same whole window and do nothing (candles are never deleted; every
    write moves the sequence). Returns (coverage, seq, body)."""
    settings = rt.settings
    if not (settings.enable_market_auto_tail_backfill and rt.is_configured(sid)):
        seq = rt.store.write_seq(sid)
        return None, seq, answers.get(sid, limit, seq)
    latest = expected_latest_closed_time(rt.backfill.clock(), sid.tf_seconds)
    seq = rt.store.write_seq(sid)
    body = answers.get_whole(sid, limit, seq, latest)
    if body is not None:
        return None, seq, body
    coverage = None
    target = min(limit, settings.auto_tail_backfill_max_candles)
    try:  # the service applies the cooldown and single flight; a failed repair never fails a read
        coverage = rt.backfill.ensure_tail_coverage(sid, target=target, to_time=None, read_path=True)
    except Exception:
        log.warning("%s: read-path tail coverage failed; serving what is stored", sid, exc_info=True)
    seq = rt.store.write_seq(sid)
    body = answers.get(sid, limit, seq)
    whole = whole_at(coverage)
    if body is not None and whole is not None:
        answers.mark_whole(sid, limit, seq, whole)
    return coverage, seq, body


def whole_at(coverage) -> int | None:
    """The newest closed time of a tail check's window when it found no hole at all, else None."""
    if coverage is None or coverage.holes or coverage.end < coverage.start:
        return None
    return coverage.end


@bp.get("/candles")
def candles():
    rt = runtime()
    sid = series_arg(rt, inactive=True)  # an inactive series' history stays readable, never repaired
    since = int_arg("since")
    limit = int_arg("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    store = rt.store
    if since is not None:
        return jsonify(_candles_doc(store, sid, store.read_after(sid, since, limit), store.head_time(sid),
                                    None))
    # a tail answer is a function of the stored candles and voids alone: kept as bytes per write sequence
    answers = current_app.extensions[TAIL_ANSWERS]
    checked = request.environ.get(TAIL_CHECKED)
    if checked is not None and checked[:2] == (sid, limit):  # checked in front of Flask a moment ago
        coverage, seq = checked[2:]
        body = answers.get(sid, limit, seq)
    else:
        coverage, seq, body = kept_tail(rt, answers, sid, limit)
    if body is not None:
        return current_app.response_class(body, mimetype=current_app.json.mimetype)
    batch = store.read_tail(sid, limit)
    # the newest `limit` candles end at the head
    head = int(batch.times[-1]) if len(batch) else store.head_time(sid)
    response = jsonify(_candles_doc(store, sid, batch, head, coverage))
    answers.put(sid, limit, seq, response.get_data(), whole_at(coverage))
    return response


def _candles_doc(store, sid, batch, head, coverage) -> dict:
    return {"series_id": str(sid), "server_head_time": head, "candles": batch.to_dicts(),
            "holes": [h.to_dict() for h in _holes_inside(store, sid, batch, coverage)]}


def _holes_inside(store, sid, batch, coverage) -> list:
    """The holes between the batch's first and last candle (both stored, so each hole is strictly inside).
    None when the tail coverage just found its window whole and the batch lies in it: candles are never
    deleted, so no hole can have opened there since."""
    if len(batch) < 2:
        return []
    first, last = int(batch.times[0]), int(batch.times[-1])
    if coverage is not None and not coverage.holes and coverage.start <= first and last <= coverage.end:
        return []
    return store.holes(sid, first, last)


@bp.get("/health")
def health():
    """Open to all; without the token (when one is set) status fields only."""
    rt = runtime()
    sid = series_arg(rt, required=False, inactive=True)
    now_time = int_arg("now_time")
    doc = rt.health(sid, now_time)
    return jsonify(doc if token_ok(rt.settings.api_token, request) else status_only(doc))


@bp.get("/series")
def series():
    rt = runtime()
    rows = []
    for sid in rt.registry.known():  # active first, then the inactive ones
        stats = rt.store.stats(sid)
        h = rt.health(sid)
        rows.append({"series_id": str(sid), "timeframe_seconds": sid.tf_seconds,
                     "first_time": stats["first_time"], "head_time": stats["head_time"],
                     "candle_count": stats["candle_count"], "status": h["status"],
                     "status_reason": h["status_reason"], "active": rt.is_configured(sid)})
    return jsonify({"series": rows})


@bp.get("/gaps")
def gaps():
    rt = runtime()
    sid = series_arg(rt, inactive=True)
    tf = sid.tf_seconds
    start = int_arg("start")
    end = int_arg("end")
    if start is not None and end is not None and end < start:
        raise BadParameter(f"end ({end}) must not be before start ({start})")
    if end is None:
        end = expected_latest_closed_time(rt.clock(), tf)
    if start is None:
        first = rt.store.first_time(sid)
        if first is None:  # nothing stored and no start: no window to look at
            return jsonify({"series_id": str(sid), "start": None, "end": end, "holes": [],
                            "missing_candles": 0})
        # a defaulted window is cut to its newest part rather than refused
        start = max(first, align_down(end, tf) - (MAX_GAPS_WINDOW_CANDLES - 1) * tf)
    # a window left empty by a default (start after the latest closed time...) simply has no hole
    size = _window_candles(start, end, tf)
    if size > MAX_GAPS_WINDOW_CANDLES:
        raise BadParameter(f"the window start..end spans {size} candles; at most {MAX_GAPS_WINDOW_CANDLES} "
                           "per call")
    holes = rt.store.holes(sid, start, end)
    return jsonify({"series_id": str(sid), "start": start, "end": end, "holes": [h.to_dict() for h in holes],
                    "missing_candles": sum(h.missing_candles for h in holes)})


@bp.post("/backfill")
def backfill():
    rt = runtime()
    if not request.is_json:
        raise BadRequest("the body must be a JSON object sent with Content-Type: application/json")
    try:
        body = request.get_json(silent=True)  # silent covers bad JSON (a ValueError), not a deep nesting
    except RecursionError:
        raise BadRequest("the body nests too deeply; send a flat JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object {"series_id": ..., "start": ..., "end": ...}')
    unknown = sorted(set(body) - set(_BACKFILL_FIELDS))
    if unknown:
        raise BadParameter(f"unknown field(s) {', '.join(map(repr, unknown))}; expected "
                           f"{', '.join(_BACKFILL_FIELDS)}")
    missing = [f for f in _BACKFILL_FIELDS if f not in body]
    if missing:
        raise BadParameter(f"missing field(s) {', '.join(missing)}")
    start = parse_int(body["start"], "start")
    end = parse_int(body["end"], "end")
    sid = parse_series(body["series_id"], rt)
    if end < start:
        raise BadParameter(f"end ({end}) must not be before start ({start})")
    size = _window_candles(start, end, sid.tf_seconds)
    if size > MAX_BACKFILL_CANDLES:
        raise BadParameter(f"the range start..end spans {size} candles; at most {MAX_BACKFILL_CANDLES} "
                           "per call")
    return jsonify(rt.backfill.backfill_range(sid, start, end).to_dict())
