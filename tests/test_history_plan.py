"""history/plan.py and sidecar.py: pure hole planning, the merge that never touches an existing row, and
the side-car's record keeping."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tradecanvas_ext.domain import CandleBatch, Hole
from tradecanvas_ext.history import plan
from tradecanvas_ext.history import sidecar as sc

TF = 60


def times(*ranges) -> np.ndarray:
    return np.concatenate([np.arange(a, b + TF, TF, dtype=np.int64) for a, b in ranges])


def test_inner_holes_are_between_the_first_and_last_candle_and_inside_the_window():
    t = times((0, 600), (900, 1200), (1500, 1800))
    assert plan.inner_holes(t, TF) == [Hole(660, 840, 4), Hole(1260, 1440, 4)]
    assert plan.inner_holes(t, TF, start=700, end=1300) == [Hole(720, 840, 3), Hole(1260, 1260, 1)]
    assert plan.inner_holes(t[:1], TF) == [] and plan.inner_holes(t, TF, start=5000) == []


def test_label_cuts_holes_where_voids_and_unavailable_ranges_begin_and_end():
    gaps = plan.label([Hole(0, 600, 11)], voids=[(120, 180)], unavailable=[(0, 60), (150, 300)], tf=TF)
    assert [(g.start, g.end, g.kind) for g in gaps] == [
        (0, 60, "unavailable"), (120, 180, "void"), (240, 300, "unavailable"), (360, 600, "missing")]
    assert sum(g.missing_candles for g in gaps) == 11


def test_fresh_keeps_only_records_younger_than_the_age():
    recs = [sc.Checked(0, 60, "ccxt", 1000.0), sc.Checked(120, 180, "ccxt", 5000.0)]
    assert plan.fresh(recs, now=6000.0, max_age_s=2000) == [(120, 180)]


@pytest.mark.parametrize("span", [1, 3, 10, 1000])
@pytest.mark.parametrize("max_holes", [1, 2, 50])
def test_fetch_groups_cover_every_hole_time_once_and_stay_within_the_span(span, max_holes):
    holes = [Hole(0, 600, 11), Hole(900, 900, 1), Hole(3000, 3600, 11)]
    groups = plan.group_for_fetch(holes, TF, span, max_holes)
    assert all(len(g) <= max_holes for g in groups)
    covered = [t for g in groups for h in g for t in range(h.start, h.end + TF, TF)]
    assert covered == [t for h in holes for t in range(h.start, h.end + TF, TF)]
    assert all(g[-1].end - g[0].start <= (span - 1) * TF for g in groups)
    assert all(h.missing_candles == (h.end - h.start) // TF + 1 for g in groups for h in g)


def test_neighbouring_holes_share_a_call_far_ones_do_not():
    holes = [Hole(0, 60, 2), Hole(300, 300, 1), Hole(100_000 * TF, 100_000 * TF, 1)]
    assert [len(g) for g in plan.group_for_fetch(holes, TF, 1000, max_holes=4)] == [2, 1]
    assert [len(g) for g in plan.group_for_fetch(holes, TF, 1000)] == [1, 1, 1]


def test_new_rows_never_replace_an_existing_row_nor_land_outside_a_hole():
    existing = times((0, 120), (300, 360))
    fetched = CandleBatch.from_rows([(t, 2.0, 3.0, 1.0, 2.0, 1.0) for t in range(0, 480, TF)])
    got = plan.new_rows(existing, fetched, [Hole(180, 240, 2)])
    assert got.times.tolist() == [180, 240]
    assert plan.new_rows(existing, fetched, [Hole(0, 420, 8)]).times.tolist() == [180, 240, 420]


def test_with_ranges_records_newer_checks_and_cuts_filled_times():
    old = (sc.Checked(0, 600, "ccxt", 1.0),)
    out = sc.with_ranges(old, [(300, 420)], "ccxt", 2.0, TF, drop=[(120, 120)])
    assert out == (sc.Checked(0, 60, "ccxt", 1.0), sc.Checked(180, 240, "ccxt", 1.0),
                   sc.Checked(300, 420, "ccxt", 2.0), sc.Checked(480, 600, "ccxt", 1.0))


def test_a_repair_records_unavailable_ranges_and_cuts_what_it_filled_or_proved_void():
    """The side-car a repair writes: learned unavailable ranges beside the voids; a re-checked unavailable
    range loses the times now filled or proven void; voids stay voids."""
    from tradecanvas_ext.history.repair import Repair

    old = sc.Sidecar("binance:spot:BTC/USDT:1m", voids=(sc.Checked(6000, 6060, "ccxt", 1.0),),
                     unavailable=(sc.Checked(0, 600, "ccxt", 1.0),))
    learned_void = [sc.Checked(480, 540, "ccxt", 9.0)]
    learned_unavailable = [sc.Checked(1200, 1320, "ccxt", 9.0)]
    filled = CandleBatch.from_rows([(t, 2.0, 3.0, 1.0, 2.0, 1.0) for t in (120, 180)])
    side = Repair._sidecar(old, learned_void, learned_unavailable, filled, TF, now=9.0)
    assert side.voids == (sc.Checked(480, 540, "ccxt", 9.0), sc.Checked(6000, 6060, "ccxt", 1.0))
    assert side.unavailable == (sc.Checked(0, 60, "ccxt", 1.0), sc.Checked(240, 420, "ccxt", 1.0),
                                sc.Checked(600, 600, "ccxt", 1.0), sc.Checked(1200, 1320, "ccxt", 9.0))
    assert side.updated_at == 9.0 and side.series_id == old.series_id
    assert Repair._sidecar(old, [], [], CandleBatch.empty(), TF, now=9.0) is old


def test_sidecar_round_trip_and_its_name(tmp_path):
    data = tmp_path / "BTC_USDT-1m.json"
    assert sc.sidecar_path(data) == tmp_path / ".tradecanvas" / "BTC_USDT-1m.json.voids"
    assert sc.load(data, "binance:spot:BTC/USDT:1m") == sc.Sidecar("binance:spot:BTC/USDT:1m")
    side = sc.Sidecar("binance:spot:BTC/USDT:1m", (sc.Checked(60, 120, "ccxt", 5.0),),
                      (sc.Checked(0, 0, "ccxt", 6.0),), 7.0, {"future_key": [1]})
    sc.save(data, side)
    assert sc.load(data, "x") == side and sc.load(data, "x").extra == {"future_key": [1]}
    assert list((tmp_path / ".tradecanvas").iterdir()) == [sc.sidecar_path(data)]  # no scratch left behind
    sc.sidecar_path(data).write_text(json.dumps({"voids": [{"start": "x"}]}))
    with pytest.raises(sc.SidecarError, match="not a readable side-car"):
        sc.load(data, "x")


def test_clip_keeps_only_the_parts_inside_the_holes():
    holes = [Hole(60, 120, 2), Hole(300, 360, 2)]
    assert plan.clip([(0, 400)], holes, TF) == [(60, 120), (300, 360)]
    assert plan.clip([(100, 130), (340, 340)], holes, TF) == [(100, 120), (340, 340)]
    assert plan.clip([(180, 240)], holes, TF) == []


@pytest.mark.parametrize("data_format", ["feather", "json", "jsongz", "parquet"])
def test_a_futures_file_is_listed_read_and_rewritten_in_its_own_folder(tmp_path, data_format):
    """Futures files live in datadir/futures/ (freqtrade's rule); the rewrite and the side-car stay there."""
    import pandas as pd

    from tradecanvas_ext.history.files import HistoryFile, list_files, merged_frame, read_frame, write_frame

    f = HistoryFile(tmp_path, data_format, "BTC/USDT:USDT", "1h", "futures", "binance")
    t = np.array([0, 3600, 10800], dtype=np.int64)
    df = pd.DataFrame({"date": pd.to_datetime(t, unit="s", utc=True).as_unit("ms"), "open": 1.0, "high": 2.0,
                       "low": 0.5, "close": 1.5, "volume": 3.0})
    write_frame(f, df)
    assert f.path.parent == tmp_path / "futures" and f.path.is_file()
    assert list_files(tmp_path, data_format, "futures", "binance") == [f] and list_files(tmp_path, data_format, "spot", "binance") == []
    loaded = read_frame(f)
    write_frame(f, merged_frame(loaded, CandleBatch.from_rows([(7200, 1.0, 2.0, 0.5, 1.5, 4.0)])))
    again = read_frame(f)
    assert (again["date"].dt.as_unit("ms").astype("int64") // 1000).tolist() == [0, 3600, 7200, 10800]
    assert again["volume"].tolist() == [3.0, 3.0, 4.0, 3.0]
    assert sorted(p.name for p in (tmp_path / "futures").iterdir()) == [".tradecanvas", f.path.name]
    assert list((tmp_path / "futures" / ".tradecanvas").iterdir()) == []
