"""Operations routes: Prometheus metrics and the OpenAPI document. Read-only; no business logic here."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from .openapi import SPEC

bp = Blueprint("ops", __name__)


@bp.get("/metrics")
def metrics():
    from ..metrics import CONTENT_TYPE

    rt = current_app.extensions["tradecanvas.runtime"]
    if rt.metrics is None:
        return Response(b"", mimetype="text/plain")
    return Response(rt.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


@bp.get("/api/market/openapi.json")
def openapi():
    return jsonify(SPEC)
