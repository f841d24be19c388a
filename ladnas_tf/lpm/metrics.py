"""How well an LPM predicts latency (paper Table 1: absolute and relative error), plus ranking quality,
and how much two latency tables agree (compare_tables).

The search only needs the LPM to order architectures correctly, so rank correlations (Kendall tau,
Spearman rho) are reported beside the paper's absolute (ms) and relative (%) errors.
"""
import math

import numpy as np
from scipy import stats

from ladnas_tf.bad_input import BadInput
from ladnas_tf.lpm import dataset


class MetricsError(BadInput):
    """Measured/predicted arrays that cannot be compared."""


def _check(measured, predicted):
    measured = np.asarray(measured, np.float64).reshape(-1)
    predicted = np.asarray(predicted, np.float64).reshape(-1)
    if measured.shape != predicted.shape:
        raise MetricsError(f'measured has {measured.size} values but predicted has {predicted.size}')
    if measured.size == 0:
        raise MetricsError('no values to compare (empty test set)')
    if not np.isfinite(predicted).all():
        raise MetricsError(f'predicted has {int((~np.isfinite(predicted)).sum())} non-finite value(s)')
    bad = np.flatnonzero(~(measured > 0))  # also catches NaN
    if bad.size:
        raise MetricsError(f'measured latencies must be positive and finite; bad at index {bad[:5].tolist()}')
    return measured, predicted


def relative_error(measured, predicted):
    """|predicted - measured| / measured, per sample (a fraction, not %)."""
    measured, predicted = _check(measured, predicted)
    return np.abs(predicted - measured) / measured


def _rank_correlation(fn, measured, predicted):
    # Undefined for fewer than 2 samples or a constant array: report NaN rather than fail.
    if measured.size < 2 or np.ptp(measured) == 0 or np.ptp(predicted) == 0:
        return math.nan
    return float(fn(measured, predicted)[0])


def regression_metrics(measured, predicted):
    """All LPM metrics as a dict of plain floats (ms, %, shares in [0, 1], correlations, n)."""
    measured, predicted = _check(measured, predicted)
    err = predicted - measured
    rel = np.abs(err) / measured
    return {
        'mae_ms': float(np.mean(np.abs(err))),
        'mre_pct': float(100.0 * np.mean(rel)),
        'rmse_ms': float(np.sqrt(np.mean(err ** 2))),
        'share_within_10pct': float(np.mean(rel <= 0.10)),
        'share_within_5pct': float(np.mean(rel <= 0.05)),
        'kendall_tau': _rank_correlation(stats.kendalltau, measured, predicted),
        'spearman_rho': _rank_correlation(stats.spearmanr, measured, predicted),
        'n': int(measured.size),
    }


def transfer_metrics(measured, predicted):
    """An LPM scored on another machine's measurements: the order it gives (Kendall tau, Spearman rho)
    and, after one scale factor (the median measured / predicted: that machine's relative speed), the
    relative error; what a user gets by re-calibrating a predictor with a handful of timings."""
    measured, predicted = _check(measured, predicted)
    scale = float(np.median(measured / predicted))
    return {'scale': scale, **regression_metrics(measured, scale * predicted)}


def lpm_transfer(model, df):
    """transfer_metrics of an LPM on another table's rows, raw and with each row's load divided out
    (latency_ms / ref_ms)."""
    predicted = model.predict_ms(dataset.encodings(df, model.cells))
    raw = df['latency_ms'].to_numpy(float)
    return {'raw': transfer_metrics(raw, predicted),
            'ref_normalised': transfer_metrics(raw / df['ref_ms'].to_numpy(float), predicted)}


def compare_tables(first, second):
    """Rank agreement of two latency tables (DataFrames of profiling/table.py, e.g. float32 against int8) on
    the architectures both measured: Kendall tau and Spearman rho of the latencies, the same on latencies
    divided by each row's reference bracket (ref_ms, which cancels machine drift), and the median
    per-architecture ratio second / first."""
    merged = first.merge(second, on='arch_id', suffixes=('_a', '_b'))
    if len(merged) < 2:
        raise MetricsError(f'the tables share {len(merged)} arch_id(s); at least 2 are needed to rank')
    a, b = merged['latency_ms_a'].to_numpy(), merged['latency_ms_b'].to_numpy()
    a_ref, b_ref = a / merged['ref_ms_a'].to_numpy(), b / merged['ref_ms_b'].to_numpy()
    return {'n': len(merged),
            'kendall_tau': float(stats.kendalltau(a, b)[0]),
            'spearman_rho': float(stats.spearmanr(a, b)[0]),
            'kendall_tau_ref_normalised': float(stats.kendalltau(a_ref, b_ref)[0]),
            'spearman_rho_ref_normalised': float(stats.spearmanr(a_ref, b_ref)[0]),
            'median_ratio': float(np.median(b / a)),
            'median_ms': (float(np.median(a)), float(np.median(b)))}
