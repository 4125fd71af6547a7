"""Prometheus metrics of one runtime (its own registry, so several runtimes in one process never mix).

Counters are bumped by the backfill service, the ingest path and the hub; gauges that describe state
(holes, voids, health, WS clients, exchange retries) are read from their owners at scrape time.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .domain import expected_latest_closed_time

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATUS = {"green": 0, "yellow": 1, "red": 2}


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.candles_stored = Counter("tradecanvas_candles_stored", "Candles written to the store",
                                      ["series_id", "source"], registry=r)
        self.candles_rejected = Counter("tradecanvas_candles_rejected", "Invalid candles refused",
                                        ["reason"], registry=r)
        self.repairs = Counter("tradecanvas_repairs", "Repairs run, by tracker note", ["series_id", "note"],
                               registry=r)
        self.repair_seconds = Histogram("tradecanvas_repair_duration_seconds", "Wall time of a repair",
                                        ["series_id"], registry=r,
                                        buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60))
        self.exchange_requests = Counter("tradecanvas_exchange_requests", "Range requests to an exchange",
                                         ["exchange"], registry=r)
        self.ws_messages = Counter("tradecanvas_ws_messages", "WebSocket messages sent", ["type"], registry=r)
        self.ws_gaps = Counter("tradecanvas_ws_gaps", "gap messages sent", ["series_id", "reason"], registry=r)

    def watch(self, core) -> None:
        """Scrape-time gauges read this core's state (a tradecanvas_ext.core.Core)."""
        self.registry.register(_StateCollector(core))

    def rejected(self, reasons) -> None:
        for _, reason in reasons:
            self.candles_rejected.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    def __init__(self, core):
        self.core = core

    def describe(self):
        return []

    def collect(self):
        core = self.core
        holes = GaugeMetricFamily("tradecanvas_holes", "Holes (not voids) in the sync window", labels=["series_id"])
        missing = GaugeMetricFamily("tradecanvas_missing_candles", "Missing candles (not voids) in the sync window",
                                    labels=["series_id"])
        voids = GaugeMetricFamily("tradecanvas_voids", "Confirmed-empty ranges in the sync window",
                                  labels=["series_id"])
        status = GaugeMetricFamily("tradecanvas_health_status", "0 green, 1 yellow, 2 red", labels=["series_id"])
        for sid in core.registry.active():
            tf = sid.tf_seconds
            end = expected_latest_closed_time(core.clock(), tf)
            start = end - (core.settings.startup_sync_target_candles - 1) * tf
            hs = core.store.holes(sid, start, end)
            open_holes = [h for h in hs if not h.settled]
            holes.add_metric([str(sid)], len(open_holes))
            missing.add_metric([str(sid)], sum(h.missing_candles for h in open_holes))
            voids.add_metric([str(sid)], len(hs) - len(open_holes))
            status.add_metric([str(sid)], _STATUS[core.health.one(sid)["status"]])
        yield from (holes, missing, voids, status)
        clients = GaugeMetricFamily("tradecanvas_ws_clients", "Connected WebSocket clients")
        clients.add_metric([], core.hub.client_count)
        yield clients
        retries = CounterMetricFamily("tradecanvas_exchange_retries", "Transient exchange errors retried")
        retries.add_metric([], float(core.exchange_retries()))
        yield retries
