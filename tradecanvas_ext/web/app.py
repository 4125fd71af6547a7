"""The Flask app factory: market blueprint, WebSocket route, error handlers, token check and CORS, all from
`runtime.settings`. It never reads the environment or files and knows nothing of how it is served."""
from __future__ import annotations

import json

import orjson
from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider

from .access import host_allowed, origin_allowed, own_names
from .blueprint import TAIL_ANSWERS
from .blueprint import bp as market_bp
from .errors import ApiError, Unauthorized, register_error_handlers, token_ok
from .ops import bp as ops_bp
from .page import OPEN_ENDPOINTS as PAGE_ENDPOINTS
from .page import bp as page_bp
from .tail_answers import TailAnswers
from .ws import ENDPOINT as WS_ENDPOINT
from .ws import init_websocket

# Reachable without the token (contract section 2). The WebSocket checks its own token (?token= too).
OPEN_ENDPOINTS = frozenset({"market.health", WS_ENDPOINT})
OPEN_ENDPOINTS |= PAGE_ENDPOINTS  # the chart page and its assets (the page asks for the token itself)
CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type"
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
    app = Flask("tradecanvas_ext")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json = JsonProvider(app)
    app.extensions["tradecanvas.runtime"] = runtime
    app.extensions[TAIL_ANSWERS] = TailAnswers()
    register_error_handlers(app)
    app.after_request(_no_sniff)
    app.register_blueprint(market_bp)
    app.register_blueprint(page_bp)
    app.register_blueprint(ops_bp)
    init_websocket(app)
    _install_access_check(app, runtime.settings.listen_ip_address, frozenset(runtime.settings.cors_origins or ()))
    _install_token_check(app, runtime.settings.api_token)
    _install_cors(app, frozenset(runtime.settings.cors_origins or ()))
    return app


def _no_sniff(response):
    """Every answer, errors and assets too: a browser takes each body as the type it is sent as."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _local_address(environ) -> str | None:
    """The address this connection reached (one of ours even when bound to 0.0.0.0); None outside a server."""
    sock = environ.get("werkzeug.socket")
    try:
        return sock.getsockname()[0] if sock is not None else None
    except (OSError, IndexError, TypeError):
        return None


def _install_access_check(app: Flask, configured_address: str, cors_origins: frozenset[str]) -> None:
    """Contract section 4, before the token check and before any upgrade: a Host that does not name this
    server (DNS rebinding) and a WebSocket Origin that is neither ours nor in cors_origins get 403."""

    @app.before_request
    def _who_may_connect():
        environ = request.environ
        names = own_names((configured_address, environ.get("SERVER_NAME"), _local_address(environ)))
        port = int(environ.get("SERVER_PORT") or 80)
        if not host_allowed(request.headers.get("Host"), names, port):
            raise ApiError(403, "forbidden", "the Host header does not name this server")
        if request.endpoint == WS_ENDPOINT and not origin_allowed(request.headers.get("Origin"), names, port,
                                                                  cors_origins):
            raise ApiError(403, "forbidden", "this Origin may not open the WebSocket: add it to "
                                             "tradecanvas.cors_origins")
        return None


def _install_token_check(app: Flask, token: str | None) -> None:
    if not token:
        return

    @app.before_request
    def _require_token():
        if request.method == "OPTIONS" or request.url_rule is None:  # preflight; 404/405 follow
            return None
        if request.endpoint in OPEN_ENDPOINTS:
            return None
        if not token_ok(token, request):
            raise Unauthorized()
        return None


def _install_cors(app: Flask, origins: frozenset[str]) -> None:
    if not origins:
        return

    @app.after_request
    def _cors(response):
        response.vary.add("Origin")
        origin = request.headers.get("Origin")
        if origin is None or origin not in origins:
            return response
        response.headers["Access-Control-Allow-Origin"] = origin
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        return response
