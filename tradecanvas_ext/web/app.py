"""The Flask app factory: market blueprint, WebSocket route, error handlers, token check and CORS, all from
`runtime.settings`. It never reads the environment or files and knows nothing of how it is served."""
from __future__ import annotations

import functools
import json

import orjson
from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider

from .access import Gate
from .blueprint import TAIL_ANSWERS
from .blueprint import bp as market_bp
from .errors import ApiError, Unauthorized, register_error_handlers
from .ops import bp as ops_bp
from .page import OPEN_ENDPOINTS as PAGE_ENDPOINTS
from .page import bp as page_bp
from .tail_answers import TailAnswers
from .tail_front import TailFront
from .ws import ENDPOINT as WS_ENDPOINT
from .ws import bot_loop_first, init_websocket

# Reachable without the token (contract section 2). The WebSocket checks its own token (?token= too).
OPEN_ENDPOINTS = frozenset({"market.health", WS_ENDPOINT})
OPEN_ENDPOINTS |= PAGE_ENDPOINTS  # the chart page and its assets (the page asks for the token itself)
MAX_BODY_BYTES = 64 * 1024


class JsonProvider(DefaultJSONProvider):
    """Flask's JSON, written by orjson (a 500-candle answer in a tenth of the time), compact and in the
    contract's field order; what orjson cannot write (an integer past 64 bits) falls back to the stdlib."""

    sort_keys = False  # keep the contract's field order
    _OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

    def dumps(self, obj, **kwargs) -> str:
        return self._bytes(obj).decode()

    def response(self, *args, **kwargs):
        if args and kwargs:
            raise TypeError("jsonify() takes either args or kwargs, not both")
        obj = (args[0] if len(args) == 1 else list(args)) if args else (kwargs or None)
        return current_app.response_class(self._bytes(obj) + b"\n", mimetype=self.mimetype)

    def _bytes(self, obj) -> bytes:
        try:
            return orjson.dumps(obj, default=self.default, option=self._OPTIONS)
        except orjson.JSONEncodeError:
            return json.dumps(obj, default=self.default, separators=(",", ":")).encode()


def create_app(runtime) -> Flask:
    settings = runtime.settings
    gate = Gate(settings.listen_ip_address, frozenset(settings.cors_origins or ()), settings.api_token)
    answers = TailAnswers()
    app = Flask("tradecanvas_ext")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json = JsonProvider(app)
    app.extensions["tradecanvas.runtime"] = runtime
    app.extensions[TAIL_ANSWERS] = answers
    register_error_handlers(app)
    app.register_blueprint(market_bp)
    app.register_blueprint(page_bp)
    app.register_blueprint(ops_bp)
    init_websocket(app)
    _install_access_check(app, gate)
    _install_token_check(app, gate)
    app.before_request(bot_loop_first)  # last: refusals are not held back
    app.after_request(functools.partial(_answer_headers, gate))
    # Flask's own middleware slot: the covered tail read answered from the kept bytes, the rest to Flask
    app.wsgi_app = TailFront(app.wsgi_app, runtime, answers, gate, app.json.mimetype)
    return app


def _answer_headers(gate: Gate, response):
    """Every answer, errors and assets too: CORS and nosniff (access.Gate.answer_headers)."""
    for name, value in gate.answer_headers(request.environ):
        if name == "Vary":
            response.vary.add(value)
        else:
            response.headers[name] = value
    return response


def _install_access_check(app: Flask, gate: Gate) -> None:
    """Contract section 4, before the token check and before any upgrade: a Host that does not name this
    server (DNS rebinding) and a WebSocket Origin that is neither ours nor in cors_origins get 403."""

    @app.before_request
    def _who_may_connect():
        if not gate.host_ok(request.environ):
            raise ApiError(403, "forbidden", "the Host header does not name this server")
        if request.endpoint == WS_ENDPOINT and not gate.websocket_origin_ok(request.environ):
            raise ApiError(403, "forbidden", "this Origin may not open the WebSocket: add it to "
                                             "tradecanvas.cors_origins")
        return None


def _install_token_check(app: Flask, gate: Gate) -> None:
    if not gate.token:
        return

    @app.before_request
    def _require_token():
        if request.method == "OPTIONS" or request.url_rule is None:  # preflight; 404/405 follow
            return None
        if request.endpoint in OPEN_ENDPOINTS:
            return None
        if not gate.token_ok(request.environ):
            raise Unauthorized()
        return None
