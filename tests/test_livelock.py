"""The livelock sweep: rows whose counters add up, the estimate of wasted CPU, the CLI's CSV."""
import csv
import math

import pytest

from fastproto import livelock
from fastproto.cli import main
from fastproto.dispatch import MODELS

TINY = dict(duration=0.15, warmup=0.05, settle=5.0)


def _check_accounts(row):
    # Every frame offered was delivered, dropped at a named place, or is in flight.
    unaccounted = row["total_offered"] - row["total_delivered"] - row["total_dropped"]
    assert 0 <= unaccounted <= row["in_flight_end"]
    assert row["offered"] >= 0 and row["delivered"] >= 0
    for place in ("rx_ring", "rx_no_buffer", "netisr_queue", "socket_pcq", "socket_rcvbuf", "other"):
        assert row[f"drop_{place}"] >= 0


@pytest.mark.parametrize("model", MODELS)
def test_a_point_accounts_for_every_frame_offered(model):
    row = livelock.run_point(model, 400_000, ring_size=256, **TINY)
    assert tuple(row) == livelock.COLUMNS
    assert row["model"] == model and row["target_pps"] == 400_000
    assert row["total_offered"] > 0 and row["total_delivered"] > 0
    _check_accounts(row)
    if model != "netisr":
        assert row["drop_netisr_queue"] == 0 and row["cpu_netisr"] == 0
    assert row["drop_other"] == 0   # every frame is a valid datagram for the socket


@pytest.mark.parametrize("nogil", [False, True])
def test_an_application_cost_is_spent_per_datagram(nogil):
    row = livelock.run_point("lrp", 20_000, app_cost_us=20.0, app_nogil=nogil, **TINY)
    _check_accounts(row)
    assert row["app_cost_us"] == 20.0 and row["app_nogil"] == int(nogil) and row["cpu_app"] > 0


def test_sweep_gives_a_row_per_model_and_rate_and_reports_progress():
    seen = []
    rows = livelock.sweep(["inline", "netisr"], [10_000, 30_000], duration=0.1, warmup=0.02,
                          progress=lambda done, total, row: seen.append((done, total, row["model"])))
    assert [(r["model"], r["target_pps"]) for r in rows] == [
        ("inline", 10_000), ("inline", 30_000), ("netisr", 10_000), ("netisr", 30_000)]
    assert seen == [(1, 4, "inline"), (2, 4, "inline"), (3, 4, "netisr"), (4, 4, "netisr")]
    for r in rows:
        _check_accounts(r)
    with pytest.raises(ValueError):
        livelock.sweep(["nosuch"], [1000])
    with pytest.raises(ValueError):
        livelock.sweep(["inline"], [1000], repeat=0)


def _row(model, offered, delivered, **kw):
    row = dict.fromkeys(livelock.COLUMNS, 0)
    row.update(model=model, offered_pps=offered, delivered_pps=delivered, **kw)
    return row


def test_peaks_find_the_peak_and_the_rate_that_saturates():
    rows = [_row("netisr", 1e4, 1e4), _row("netisr", 1e5, 8e4), _row("netisr", 1e6, 2e4),
            _row("lrp", 1e4, 1e4), _row("lrp", 1e5, 9e4), _row("lrp", 1e6, 9e4)]
    p = livelock.peaks(rows)
    assert p["netisr"] == {"peak_pps": 8e4, "saturation_pps": 1e5, "last_pps": 2e4, "last_frac": 0.25}
    assert p["lrp"]["last_frac"] == 1.0


def test_wasted_cpu_charges_each_stage_a_dropped_frame_went_through():
    d = {"pulled": 1000, "demux_delivered": 500, "cpu_puller": 1.0, "cpu_netisr": 2.0,
         "cpu_workers": 0.5, "drop_rx_ring": 10_000, "drop_rx_no_buffer": 0,
         "drop_netisr_queue": 600, "drop_socket_pcq": 0, "drop_socket_rcvbuf": 100}
    # netisr: a queue drop costs the puller's 1 ms per frame; a rcvbuf drop the
    # puller's and the netisr thread's (2.0 s / 400 frames); the ring's nothing.
    assert math.isclose(livelock._wasted_cpu("netisr", d), 600 * 1e-3 + 100 * (1e-3 + 5e-3))
    d.update(drop_netisr_queue=0, drop_socket_pcq=50)
    # kcont: a PCQ drop costs the puller; a rcvbuf drop the puller and a worker.
    assert math.isclose(livelock._wasted_cpu("kcont", d), 50 * 1e-3 + 100 * (1e-3 + 1e-3))
    d.update(drop_socket_pcq=0, drop_socket_rcvbuf=0)
    assert livelock._wasted_cpu("puller", d) == 0.0


def test_parse_rate_takes_suffixes_and_refuses_nonsense():
    assert livelock.parse_rate("20k") == 20_000
    assert livelock.parse_rate("1.5M") == 1_500_000
    assert livelock.parse_rate(" 300 ") == 300
    for bad in ("", "-5", "0", "fast", "inf"):
        with pytest.raises(ValueError):
            livelock.parse_rate(bad)


def test_cli_writes_a_csv_with_the_columns(tmp_path, capsys):
    out = tmp_path / "ll.csv"
    assert main(["livelock", "--models", "puller", "kcont", "--rates", "20k", "--duration", "0.1",
                 "--warmup", "0.02", "--csv", str(out)]) == 0
    with out.open() as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    assert tuple(header) == livelock.COLUMNS
    assert [r[0] for r in rows] == ["puller", "kcont"]
    assert all(float(r[header.index("target_pps")]) == 20_000 for r in rows)
    back = livelock.read_csv(out.open())
    assert [r["model"] for r in back] == ["puller", "kcont"] and back[0]["target_pps"] == 20_000
    assert isinstance(back[0]["total_offered"], int) and back[0]["total_offered"] > 0
    printed = capsys.readouterr()
    assert "delivered k/s" in printed.out and "2/2" in printed.err


def test_cli_refuses_unknown_models_and_bad_rates(capsys):
    assert main(["livelock", "--models", "bsd", "--rates", "1k"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["livelock", "--models", "lrp", "--rates", "fast"]) == 2


def test_plot_writes_a_png_when_matplotlib_is_there(tmp_path):
    rows = [_row("lrp", 1e4, 1e4), _row("lrp", 1e5, 9e4)]
    path = tmp_path / "ll.png"
    made = livelock.plot(rows, str(path))
    assert made == path.exists()
    if made:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
