"""Hypothesis drives random ingest / subscribe / unsubscribe / reconnect-with-since schedules through the
real server and checks contract section 4's guarantee on every client's received sequence."""
from __future__ import annotations

import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.conftest import NOW
from tests.wsclient import WS, check_guarantee, events
from tradecanvas_ext import Runtime, Settings
from tradecanvas_ext.domain import SeriesId
from tradecanvas_ext.testing import ExchangeEmulator, ManualClock

SID = "binance:spot:BTC/USDT:1m"
TF = 60
BASE = (NOW // TF) * TF - 120 * TF  # 120 closed slots before NOW
SLOTS = 118
OUTAGE = {5, 6, 40, 77, 78, 79, 115}  # slots the exchange never had (old ones become voids)
BARRIER = BASE + 1000 * TF  # forming candles far after every slot: sent to every open subscription


class HubMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        self.clock = ManualClock(NOW)
        self.emu = ExchangeEmulator(seed=2, symbols=("BTC/USDT",), clock=self.clock).start()
        for s in OUTAGE:
            self.emu.faults.outage(BASE + s * TF, BASE + (s + 1) * TF)
        self.tmp = tempfile.TemporaryDirectory()
        cfg = {"tradecanvas": {"enabled": True, "listen_port": 0, "series": [SID],
                               "ccxt_config": self.emu.ccxt_config(), "ccxt_timeout_ms": 2000,
                               "db_url": f"sqlite:///{self.tmp.name}/h.sqlite"}}
        self.rt = Runtime(Settings.from_config(cfg, env={}), clock=self.clock).start(serve=True, startup_sync=False)
        self.truth = {r[0]: r for r in self.emu.candles("BTC/USDT", "1m", BASE, BASE + SLOTS * TF)}
        self.next_slot = 0
        self.clients: dict[int, dict] = {}  # id -> {"ws": WS, "segments": [(since, start_index)]}
        self.barriers = 0

    def teardown(self):
        for c in getattr(self, "clients", {}).values():
            c["ws"].close()
        if hasattr(self, "rt"):
            self.rt.stop()
            self.emu.stop()
            self.tmp.cleanup()

    # ---- rules ----------------------------------------------------------------------------------
    @rule(skip=st.integers(0, 3), n=st.integers(1, 4))
    def ingest(self, skip, n):
        slots = list(range(self.next_slot + skip, min(SLOTS, self.next_slot + skip + n)))
        rows = [self.truth[BASE + s * TF] for s in slots if BASE + s * TF in self.truth]
        if slots:
            self.next_slot = slots[-1] + 1
        if rows:
            self.rt.ingest_closed(SID, rows)

    @rule(back=st.integers(1, 10))
    def reingest_old(self, back):
        t = BASE + max(0, self.next_slot - back) * TF
        if t in self.truth:
            self.rt.ingest_closed(SID, [self.truth[t]])

    @rule(cid=st.integers(0, 2), since=st.one_of(st.none(), st.integers(-5, 120)), batch=st.booleans())
    def subscribe(self, cid, since, batch):
        c = self._client(cid)
        s = None if since is None else BASE + since * TF + (7 if since % 3 == 0 else 0)
        s = None if s is not None and s < 0 else s
        c["segments"].append((s, len(c["ws"].received)))
        msg = {"type": "subscribe", "series_id": SID, "supports_batch": batch}
        if s is not None:
            msg["since"] = s
        c["ws"].send(msg)
        c["ws"].until(lambda m: m["type"] == "subscribed")
        c["segments"][-1] = (s, len(c["ws"].received) - 1)

    @rule(cid=st.integers(0, 2))
    def unsubscribe(self, cid):
        c = self.clients.get(cid)
        if c is None:
            return
        c["ws"].send({"type": "unsubscribe", "series_id": SID})
        c["ws"].send({"type": "ping"})
        c["ws"].until(lambda m: m["type"] == "pong")
        c["segments"].append(("closed", len(c["ws"].received)))

    @rule(cid=st.integers(0, 2))
    def reconnect_with_since(self, cid):
        c = self.clients.get(cid)
        if c is None:
            return
        self._check_client(c)
        seen = [e[1] for e in events(c["ws"].received) if e[0] == "c"]
        c["ws"].close()
        self.clients.pop(cid)
        self.clients[cid] = self._new_client_state()
        if seen:
            self.subscribe(cid, (seen[-1] - BASE) // TF, False)

    # ---- checks ---------------------------------------------------------------------------------
    @invariant()
    def delivery_guarantee_so_far(self):
        if not hasattr(self, "clients"):
            return
        self._barrier()
        for c in self.clients.values():
            self._check_client(c)

    def check_final(self):
        stored = set(self.rt.store.read_between(SeriesId.parse(SID), 0, 10**10).times.tolist())
        self._barrier()
        for c in self.clients.values():
            times, since = self._check_client(c)
            if since == "closed" or since is None and not times:
                continue
            # complete: every stored candle after the cursor start was sent or lies inside a gap
            gaps = [e for e in self._segment_events(c) if e[0] == "gap"]
            start = -1 if since is None else since // TF * TF
            for t in stored:
                if t <= start or (times and t < times[0] and since is None):
                    continue
                assert t in times or any(g[1] <= t < g[2] for g in gaps), f"stored {t} never delivered"
            assert not times or times[-1] == max(stored)

    # ---- helpers --------------------------------------------------------------------------------
    def _barrier(self):
        """Publish a forming candle and wait until every open subscription has sent it: a subscription
        handles its events one at a time, in order, so everything published before it was handled."""
        self.barriers += 1
        t = BARRIER + self.barriers * TF  # a new candle time each time: never throttled
        self.rt.ingest_forming(SID, {"candle_time": t, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
                                     "volume": 1.0})
        for c in self.clients.values():
            if c["segments"] and c["segments"][-1][0] != "closed":
                c["ws"].until(lambda m: m["type"] == "candle_forming" and m["candle"]["candle_time"] == t, 30)

    def _new_client_state(self):
        return {"ws": WS(self.rt.url), "segments": []}

    def _client(self, cid):
        if cid not in self.clients:
            self.clients[cid] = self._new_client_state()
        return self.clients[cid]

    def _segment_events(self, c):
        since, start = c["segments"][-1] if c["segments"] else (None, 0)
        return events(c["ws"].received[start + 1:], SID)

    def _check_client(self, c):
        segs = c["segments"] + [(None, len(c["ws"].received))]
        times, since = [], None
        for (since, start), (_, end) in zip(segs, segs[1:], strict=False):
            if since == "closed":
                assert events(c["ws"].received[start:end], SID) == []
                times = []
                continue
            times = check_guarantee(c["ws"].received[start + 1:end], SID, TF, since)
        return times, (c["segments"][-1][0] if c["segments"] else None)


@pytest.mark.slow
def test_hub_delivery_guarantee_under_random_schedules():
    import hypothesis.stateful as hs

    class Final(HubMachine):
        def teardown(self):
            try:
                if hasattr(self, "rt"):
                    self.check_final()
            finally:
                super().teardown()

    hs.run_state_machine_as_test(Final, settings=settings(
        max_examples=8, stateful_step_count=14, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
