"""The chart page (contract section 3, `GET /`): index.html and its static assets, shipped inside the package
so the page works with no internet. It never reads the store: the page is a client of the API like any other."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template

# /assets, not /static: Flask("tradecanvas_ext") already routes /static/<path> to a package folder that does
# not exist, and the two rules would clash.
bp = Blueprint("page", __name__, static_folder="static", static_url_path="/assets", template_folder="static")

# Reachable without the token (contract section 2): the page asks for it and sends it on every API call.
OPEN_ENDPOINTS = frozenset({"page.index", "page.static"})

# Everything comes from this server; nothing is fetched from the internet. lightweight-charts sets inline
# styles from script (allowed) and the page sets a few style attributes, hence 'unsafe-inline' for styles.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'")


@bp.get("/")
def index():
    token_required = bool(current_app.extensions["tradecanvas.runtime"].settings.api_token)
    resp = current_app.make_response(render_template("index.html", token_required=token_required))
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["Cache-Control"] = "no-cache"
    return resp
