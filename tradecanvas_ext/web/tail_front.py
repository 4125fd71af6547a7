"""TailFront: the covered tail read (GET /api/market/candles without `since`) answered from the kept bytes in
front of Flask; everything else goes to Flask. It never decides an access rule (access.Gate does) and never
builds an error (a refused or wrong request falls through, and Flask answers it as without this layer).

Locks: none of its own (TailAnswers locks itself; the query memo is functools.lru_cache)."""
from __future__ import annotations

import functools

from werkzeug.wrappers import Request

from ..domain import SeriesId
from .access import Gate
from .blueprint import DEFAULT_LIMIT, MAX_LIMIT, TAIL_CHECKED, kept_tail
from .errors import ApiError, parse_int, parse_series_text, require_series, single_arg
from .tail_answers import TailAnswers

PATH = "/api/market/candles"  # the market blueprint's candles route


class TailFront:
    """Holds no state of its own: the kept bodies are the app's TailAnswers, filled by the Flask view."""

    def __init__(self, flask_wsgi, runtime, answers: TailAnswers, gate: Gate, mimetype: str):
        self._flask = flask_wsgi
        self._runtime = runtime
        self._answers = answers
        self._gate = gate
        self._mimetype = mimetype

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO") == PATH:
            body = self._kept_body(environ)
            if body is not None:
                # the headers Flask gives the view's answer of these bytes, then its after_request hook's
                start_response("200 OK", [("Content-Type", self._mimetype), ("Content-Length", str(len(body))),
                                          *self._gate.answer_headers(environ)])
                return [body]
        return self._flask(environ, start_response)

    def _kept_body(self, environ) -> bytes | None:
        """The body the view would answer from what is kept, or None (then Flask handles the request)."""
        gate = self._gate
        if not gate.host_ok(environ) or not gate.token_ok(environ):
            return None  # Flask's hooks refuse it
        query = tail_query(environ.get("QUERY_STRING", ""))
        if query is None:
            return None  # the plain read, or a parameter Flask will refuse
        sid, limit = query
        rt = self._runtime
        try:
            coverage, seq, body = kept_tail(rt, self._answers, require_series(sid, rt, inactive=True), limit)
        except Exception:  # an unknown series or a failing store: Flask answers it (its error, its log)
            return None
        if body is None:  # the view builds it: from this check, not a second one
            environ[TAIL_CHECKED] = (sid, limit, coverage, seq)
        return body


@functools.lru_cache(maxsize=256)  # pure; a chart asks the same few queries over and over
def tail_query(query_string: str) -> tuple[SeriesId, int] | None:
    """A query string's tail read (series, limit) as the view parses it, or None: not a tail read (`since`
    is given) or a parameter the view refuses."""
    environ = {"QUERY_STRING": query_string}
    args = Request(environ, populate_request=False, shallow=True).args  # parsed as Flask parses them
    if "since" in args:
        return None
    try:
        sid = parse_series_text(single_arg(args, "series_id"))
        raw = single_arg(args, "limit")
        return sid, DEFAULT_LIMIT if raw is None else parse_int(raw, "limit", minimum=1, maximum=MAX_LIMIT)
    except ApiError:
        return None
