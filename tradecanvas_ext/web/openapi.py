"""The OpenAPI 3.1 description of the HTTP API (contract section 3), served at /api/market/openapi.json.
Tests keep it true: every route is described, every response validates against its schema."""
from __future__ import annotations

_INT = {"type": "integer", "minimum": 0}
_NINT = {"type": ["integer", "null"], "minimum": 0}
_SERIES_PARAM = {"name": "series_id", "in": "query", "required": True,
                 "description": "exchange:market:symbol:timeframe, e.g. binance:spot:BTC/USDT:1m",
                 "schema": {"type": "string"}}


def _q(name: str, description: str, schema=None, required=False) -> dict:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or _INT}


def _ok(ref: str) -> dict:
    return {"description": "OK", "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_ERR = {"description": "Bad input, missing token or unknown series",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

SCHEMAS = {
    "Candle": {"type": "object", "required": ["candle_time", "open", "high", "low", "close", "volume"],
               "properties": {"candle_time": _INT, "open": {"type": "number", "exclusiveMinimum": 0},
                              "high": {"type": "number", "exclusiveMinimum": 0},
                              "low": {"type": "number", "exclusiveMinimum": 0},
                              "close": {"type": "number", "exclusiveMinimum": 0},
                              "volume": {"type": "number", "minimum": 0}}},
    "Hole": {"type": "object", "required": ["start", "end", "missing_candles", "void", "unavailable"],
             "properties": {"start": _INT, "end": _INT, "missing_candles": {"type": "integer", "minimum": 1},
                            "void": {"type": "boolean"}, "unavailable": {"type": "boolean"}}},
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "object", "required": ["code", "message"],
                                       "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "Candles": {"type": "object", "required": ["series_id", "server_head_time", "candles", "holes"],
                "properties": {"series_id": {"type": "string"}, "server_head_time": _NINT,
                               "candles": {"type": "array", "items": {"$ref": "#/components/schemas/Candle"}},
                               "holes": {"type": "array", "items": {"$ref": "#/components/schemas/Hole"}}}},
    "Tracker": {"type": "object", "required": ["state"],
                "properties": {"state": {"enum": ["idle", "running", "succeeded", "failed"]},
                               "progress_pct": {"type": ["number", "null"]}, "note": {"type": ["string", "null"]},
                               "error": {"type": ["string", "null"]}}},
    "SeriesHealth": {
        "type": "object",
        "required": ["series_id", "timeframe_seconds", "now_time", "expected_latest_closed_time", "head_time",
                     "lag_seconds", "missing_seconds", "missing_candles", "status", "status_reason", "backfill"],
        "properties": {"series_id": {"type": "string"}, "timeframe_seconds": {"type": "integer"},
                       "now_time": _INT, "expected_latest_closed_time": _INT, "head_time": _NINT,
                       "lag_seconds": _NINT, "missing_seconds": _NINT, "missing_candles": _NINT,
                       "status": {"enum": ["green", "yellow", "red", "inactive"]},
                       "status_reason": {"enum": ["missing_head", "head_ahead_of_closed_window", "up_to_date",
                                                  "backfill_running", "backfill_recent",
                                                  "lagging_no_recent_backfill", "not_traded"]},
                       "active": {"type": "boolean", "description": "false: the bot no longer trades it "
                                                                    "(kept and listed, not repaired or counted)"},
                       "backfill": {"$ref": "#/components/schemas/Tracker"}}},
    "Health": {"oneOf": [
        {"$ref": "#/components/schemas/SeriesHealth"},
        {"type": "object", "required": ["status", "series", "startup_sync"],
         "properties": {"status": {"enum": ["green", "yellow", "red"]},
                        "series": {"type": "array", "items": {"$ref": "#/components/schemas/SeriesHealth"}},
                        "startup_sync": {"type": ["object", "null"]}}}]},
    "SeriesList": {"type": "object", "required": ["series"], "properties": {"series": {"type": "array", "items": {
        "type": "object", "required": ["series_id", "first_time", "head_time", "candle_count", "status"],
        "properties": {"series_id": {"type": "string"}, "first_time": _NINT, "head_time": _NINT,
                       "candle_count": {"type": "integer", "minimum": 0},
                       "status": {"enum": ["green", "yellow", "red", "inactive"]},
                       "active": {"type": "boolean"}}}}}},
    "Gaps": {"type": "object", "required": ["series_id", "start", "end", "holes", "missing_candles"],
             "properties": {"series_id": {"type": "string"}, "start": _NINT, "end": _NINT,
                            "holes": {"type": "array", "items": {"$ref": "#/components/schemas/Hole"}},
                            "missing_candles": {"type": "integer", "minimum": 0}}},
    "BackfillRequest": {"type": "object", "required": ["series_id", "start", "end"], "additionalProperties": False,
                        "properties": {"series_id": {"type": "string"}, "start": _INT, "end": _INT}},
    "Coverage": {"type": "object",
                 "required": ["series_id", "start", "end", "target", "covered", "filled", "value", "complete",
                              "holes", "sources", "errors"],
                 "properties": {"series_id": {"type": "string"}, "start": {"type": "integer"},
                                "end": {"type": "integer"}, "target": {"type": "integer"},
                                "covered": {"type": "integer"}, "filled": {"type": "integer"},
                                "value": {"type": "integer"}, "complete": {"type": "boolean"},
                                "holes": {"type": "array", "items": {"$ref": "#/components/schemas/Hole"}},
                                "sources": {"type": "object", "additionalProperties": {"type": "integer"}},
                                "errors": {"type": "array", "items": {"type": "string"}}}},
}

SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "tradecanvas_ext market API", "version": "1",
             "description": "Gap-aware candles, holes, voids and health of the series a freqtrade bot keeps."},
    "components": {"schemas": SCHEMAS,
                   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/api/market/candles": {"get": {
            "operationId": "candles", "summary": "Closed candles, ascending, with the holes inside the range",
            "parameters": [_SERIES_PARAM, _q("since", "exclusive open time; without it the last `limit`"),
                           _q("limit", "1-5000, default 500", {"type": "integer", "minimum": 1, "maximum": 5000})],
            "responses": {"200": _ok("Candles"), "400": _ERR, "401": _ERR, "404": _ERR}}},
        "/api/market/health": {"get": {
            "operationId": "health", "security": [],
            "summary": "Health of one series or of all; without the token (when one is set) the backfill "
                       "error and owner and the startup sync's per-series errors are left out",
            "parameters": [{**_SERIES_PARAM, "required": False}, _q("now_time", "evaluate at this time")],
            "responses": {"200": _ok("Health"), "400": _ERR, "404": _ERR}}},
        "/api/market/series": {"get": {
            "operationId": "series", "summary": "The configured series", "parameters": [],
            "responses": {"200": _ok("SeriesList"), "401": _ERR}}},
        "/api/market/gaps": {"get": {
            "operationId": "gaps", "summary": "Every hole in a window, computed by the database",
            "parameters": [_SERIES_PARAM, _q("start", "window start (default: first stored candle)"),
                           _q("end", "window end (default: the latest closed candle)")],
            "responses": {"200": _ok("Gaps"), "400": _ERR, "401": _ERR, "404": _ERR}}},
        "/api/market/backfill": {"post": {
            "operationId": "backfill", "summary": "Repair a range through the decision tree (to_time = end)",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/BackfillRequest"}}}},
            "responses": {"200": _ok("Coverage"), "400": _ERR, "401": _ERR, "404": _ERR}}},
        "/api/market/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document",
            "responses": {"200": {"description": "OpenAPI document"}, "401": _ERR}}},
        "/metrics": {"get": {
            "operationId": "metrics", "summary": "Prometheus metrics (text format)",
            "responses": {"200": {"description": "Prometheus text", "content": {"text/plain": {}}},
                          "401": _ERR}}},
    },
}
