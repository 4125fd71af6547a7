"""The API's errors in one place: our exception types, their contract JSON form, and the request parsers
that raise them. Never answers with HTML, and never puts a traceback or a secret in a response."""
from __future__ import annotations

import logging
import re

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import WebsocketMismatch

from ..domain import MAX_TIME, SeriesId
from ..series_ids import parse_series_id
from .access import token_matches

log = logging.getLogger(__name__)

MAX_INT = MAX_TIME  # largest integer accepted for a time or count parameter
_DECIMAL = re.compile(r"[0-9]{1,16}", re.ASCII)

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


class ApiError(Exception):
    """An error the client caused (or may see): turned into `{"error": {"code", "message"}}`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


class BadParameter(ApiError):
    def __init__(self, message: str):
        super().__init__(400, "bad_parameter", message)


class BadRequest(ApiError):
    def __init__(self, message: str):
        super().__init__(400, "bad_request", message)


class Unauthorized(ApiError):
    def __init__(self, message: str = "missing or wrong API token: send 'Authorization: Bearer <token>'"):
        super().__init__(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="tradecanvas"'})


class UnknownSeries(ApiError):
    def __init__(self, series_id: str):
        super().__init__(404, "unknown_series", f"series_id {series_id!r} is not a configured series")


class NotFound(ApiError):
    def __init__(self, message: str):
        super().__init__(404, "not_found", message)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None):
    resp = jsonify({"error": {"code": code, "message": message}})
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        return error_response(e.status, e.code, e.message, e.headers)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        if e.code is None or e.code < 400:  # a routing redirect is a response, not an error
            return e
        if e.code == 404:
            message = f"no route {request.method} {request.path}"
        elif isinstance(e, WebsocketMismatch):
            message = f"{request.path} only accepts WebSocket connections"
        elif e.code == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        else:
            message = e.description or e.name
        # keep e.g. 405's Allow header; our body replaces werkzeug's HTML
        headers = {k: v for k, v in e.get_headers() if k.lower() != "content-type"}
        return error_response(e.code, _HTTP_CODES.get(e.code, f"http_{e.code}"), message, headers)

    @app.errorhandler(Exception)
    def _internal_error(e: Exception):
        log.error("internal error on %s %s", request.method, request.path, exc_info=e)
        return error_response(500, "internal_error", "internal server error (logged on the server)")


# ---- request parsing -------------------------------------------------------------------------------------

def single_arg(args, name: str) -> str | None:
    """The one value of query parameter `name` in `args` (a MultiDict), None when absent."""
    values = args.getlist(name)
    if len(values) > 1:
        raise BadParameter(f"{name} is given {len(values)} times; give it once")
    return values[0] if values else None


def _single_arg(name: str) -> str | None:
    return single_arg(request.args, name)


def parse_int(raw: object, name: str, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """A plain decimal integer (query string) or a JSON integer (not a bool or float) in [minimum, maximum]."""
    if isinstance(raw, str):
        if not _DECIMAL.fullmatch(raw):
            shown = raw if len(raw) <= 40 else raw[:40] + "..."
            if raw.isascii() and raw.isdigit():
                raise BadParameter(f"{name} must be at most {maximum}, got {shown!r}")
            raise BadParameter(f"{name} must be a non-negative decimal integer, got {shown!r}")
        value = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        raise BadParameter(f"{name} must be an integer, got {type(raw).__name__} {raw!r}"[:200])
    if value < minimum:
        raise BadParameter(f"{name} must be at least {minimum}, got {value}")
    if value > maximum:
        raise BadParameter(f"{name} must be at most {maximum}, got {value}")
    return value


def int_arg(name: str, default: int | None = None, minimum: int = 0, maximum: int = MAX_INT) -> int | None:
    raw = _single_arg(name)
    if raw is None:
        return default
    return parse_int(raw, name, minimum, maximum)


def parse_series(raw: object, runtime, name: str = "series_id", inactive: bool = False) -> SeriesId:
    """Parse a series_id (400 naming the wrong part) and require it to be configured (404); with
    `inactive`, a series the bot no longer trades (kept and listed) is accepted too."""
    return require_series(parse_series_text(raw, name), runtime, inactive)


def parse_series_text(raw: object, name: str = "series_id") -> SeriesId:
    """The text part of parse_series (pure: the same text always gives the same answer)."""
    if raw is None:
        raise BadParameter(f"{name} is required, e.g. binance:spot:BTC/USDT:1m")
    if not isinstance(raw, str):
        raise BadParameter(f"{name} must be a string, got {type(raw).__name__}")
    try:
        return parse_series_id(raw)
    except ValueError as exc:
        raise BadParameter(str(exc) if str(exc).startswith("series_id") else f"{name}: {exc}") from None


def require_series(sid: SeriesId, runtime, inactive: bool = False) -> SeriesId:
    """The runtime part of parse_series: the series is configured (or, with `inactive`, known), else 404."""
    if not (runtime.is_known(sid) if inactive else runtime.is_configured(sid)):
        raise UnknownSeries(str(sid))
    return sid


def token_ok(expected: str | None, req, allow_query: bool = False) -> bool:
    """The token rule (access.token_matches) over a Flask request; `?token=` only with `allow_query`."""
    query_token = req.args.get("token") if allow_query else None
    return token_matches(expected, req.headers.get("Authorization"), query_token)


def series_arg(runtime, required: bool = True, inactive: bool = False) -> SeriesId | None:
    raw = _single_arg("series_id")
    if raw is None and not required:
        return None
    return parse_series(raw, runtime, inactive=inactive)
