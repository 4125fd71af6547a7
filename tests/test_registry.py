"""SeriesRegistry: active / inactive series and change notifications (the base of live series)."""
from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradecanvas_ext.domain import SeriesId
from tradecanvas_ext.registry import RegistryChange, SeriesRegistry

POOL = [SeriesId("binance", "spot", f"C{i}/USDT", "1m") for i in range(6)]
_ops = st.lists(st.tuples(st.sampled_from(["register", "retire", "replace"]),
                          st.lists(st.sampled_from(POOL), max_size=4)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(start=st.lists(st.sampled_from(POOL), unique=True, max_size=4), ops=_ops)
def test_registry_matches_a_model_and_reports_every_change_once(start, ops):
    reg = SeriesRegistry(start)
    active, inactive = list(start), []
    seen: list[RegistryChange] = []
    reg.add_listener(seen.append)
    for op, arg in ops:
        before_active, before_inactive = list(active), list(inactive)
        if op == "register":
            for s in arg:
                if s not in active:
                    if s in inactive:
                        inactive.remove(s)
                    active.append(s)
        elif op == "retire":
            for s in arg:
                if s in active:
                    active.remove(s)
                    inactive.append(s)
        else:
            wanted = list(dict.fromkeys(arg))
            for s in [s for s in active if s not in wanted]:
                active.remove(s)
                inactive.append(s)
            for s in wanted:
                if s not in active:
                    if s in inactive:
                        inactive.remove(s)
                    active.append(s)
        change = getattr(reg, op)(arg)
        assert list(reg.active()) == active and list(reg.inactive()) == inactive
        assert set(change.activated) == set(active) - set(before_active)
        assert set(change.retired) == set(before_active) - set(active)
        assert set(inactive) >= set(before_inactive) - set(active)  # nothing known is ever forgotten
        for s in POOL:
            assert reg.is_active(s) == (s in active)
            assert reg.is_known(s) == (s in active or s in inactive)
    assert seen == [c for c in seen if c]  # listeners hear only real changes
    assert len(reg) == len(active)


def test_listeners_run_outside_the_lock_and_a_failing_one_does_not_stop_the_others():
    reg = SeriesRegistry([POOL[0]])
    heard = []

    def reads_back(change):  # would deadlock if called under the registry's lock
        heard.append((change, reg.active()))

    def broken(change):
        raise RuntimeError("a listener bug")

    reg.add_listener(broken)
    remove = reg.add_listener(reads_back)
    change = reg.replace([POOL[1]])
    assert change == RegistryChange(activated=(POOL[1],), retired=(POOL[0],))
    assert heard == [(change, (POOL[1],))]
    remove()
    reg.register([POOL[2]])
    assert len(heard) == 1
    assert reg.known() == (POOL[1], POOL[2], POOL[0])


def test_only_series_ids_are_accepted():
    with pytest.raises(TypeError, match="SeriesId"):
        SeriesRegistry(["binance:spot:BTC/USDT:1m"])
    with pytest.raises(TypeError, match="SeriesId"):
        SeriesRegistry().register(["binance:spot:BTC/USDT:1m"])


def test_concurrent_register_and_retire_keep_the_sets_disjoint():
    reg = SeriesRegistry()
    barrier = threading.Barrier(4)

    def churn(k):
        barrier.wait()
        for i in range(300):
            s = POOL[(i + k) % len(POOL)]
            (reg.register if (i + k) % 2 else reg.retire)([s])

    threads = [threading.Thread(target=churn, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(reg.active()) & set(reg.inactive())
    assert set(reg.known()) <= set(POOL)
