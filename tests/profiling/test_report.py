"""The table report: spread of latency at equal MACs, quiet rows, the Figure-2 picture."""
import numpy as np
import pandas as pd
import pytest

from ladnas_tf.profiling import report


def _table(load=None):
    # 2 MACs levels x 5 rows: latencies 10..14 and 20..24, so per bin min/max = 10/14, 20/24.
    macs = np.repeat([1e8, 2e8], 5)
    latency = np.concatenate([10 + np.arange(5), 20 + np.arange(5)]).astype(float)
    ref = np.full(10, 18.0) if load is None else 18.0 * np.asarray(load)
    return pd.DataFrame({'macs': macs, 'latency_ms': latency, 'ref_ms': ref})


def test_spread_is_the_median_over_bins_of_fastest_against_slowest_and_median():
    spread = report.spread_at_equal_macs(_table(), bins=2)
    assert spread['bins'] == 2
    assert spread['min_vs_max'] == pytest.approx(np.median([1 - 10 / 14, 1 - 20 / 24]))
    assert spread['min_vs_median'] == pytest.approx(np.median([1 - 10 / 12, 1 - 20 / 22]))


def test_too_few_rows_are_refused_in_one_line():
    with pytest.raises(ValueError, match='too few'):
        report.spread_at_equal_macs(_table().iloc[:4], bins=2)


def test_quiet_rows_drop_those_timed_under_load():
    load = [1.0, 1.02, 0.97, 1.3, 1.0, 1.0, 1.1, 1.0, 1.04, 2.0]
    quiet = report.quiet_rows(_table(load))
    assert list(quiet.index) == [0, 1, 2, 4, 5, 7, 8]


def test_plot_writes_a_png_and_returns_both_spreads(tmp_path):
    df = pd.concat([_table()] * 2, ignore_index=True)
    path = tmp_path / 'fig.png'
    spread = report.plot_latency_vs_macs(df, str(path), 'tiny')
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert spread['quiet']['min_vs_max'] == pytest.approx(spread['min_vs_max'])
