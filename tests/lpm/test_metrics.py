"""LPM metrics against values computed by hand on tiny arrays; two tables compared (tools.compare_tables)."""
import math

import numpy as np
import pandas as pd
import pytest

from ladnas_tf import genotypes
from ladnas_tf.lpm import metrics
from ladnas_tf.profiling import table


def test_errors_by_hand():
    # errors 2, -0.5, -3, 0 ms; relative 20%, 2.5%, 7.5%, 0%
    m = metrics.regression_metrics([10, 20, 40, 50], [12, 19.5, 37, 50])
    assert m['mae_ms'] == pytest.approx(5.5 / 4)
    assert m['mre_pct'] == pytest.approx(30 / 4)
    assert m['rmse_ms'] == pytest.approx(math.sqrt(13.25 / 4))
    assert m['share_within_10pct'] == 0.75 and m['share_within_5pct'] == 0.5
    assert m['kendall_tau'] == pytest.approx(1.0) and m['spearman_rho'] == pytest.approx(1.0)
    assert m['n'] == 4


def test_rank_correlations_by_hand():
    # One swapped pair out of 6: tau = (5 - 1) / 6; rank differences 0, 1, -1, 0: rho = 1 - 6 * 2 / (4 * 15).
    m = metrics.regression_metrics([1, 2, 3, 4], [1, 3, 2, 4])
    assert m['kendall_tau'] == pytest.approx(2 / 3)
    assert m['spearman_rho'] == pytest.approx(0.8)
    assert m['mae_ms'] == pytest.approx(0.5)
    assert m['mre_pct'] == pytest.approx(100 * (1 / 2 + 1 / 3) / 4)
    assert m['rmse_ms'] == pytest.approx(math.sqrt(0.5))
    assert m['share_within_10pct'] == 0.5 and m['share_within_5pct'] == 0.5


def test_relative_error_per_sample():
    np.testing.assert_allclose(metrics.relative_error([10, 40], [9, 50]), [0.1, 0.25])


def test_undefined_rank_correlation_is_nan():
    m = metrics.regression_metrics([5, 6, 7], [3, 3, 3])
    assert math.isnan(m['kendall_tau']) and math.isnan(m['spearman_rho'])
    assert m['mre_pct'] == pytest.approx(100 * (2 / 5 + 3 / 6 + 4 / 7) / 3)
    assert math.isnan(metrics.regression_metrics([5], [5])['kendall_tau'])


@pytest.mark.parametrize('measured, predicted, words', [
    ([1, 2], [1], 'measured has 2 values but predicted has 1'),
    ([], [], 'empty'),
    ([1, 0, 2], [1, 1, 1], 'positive and finite; bad at index [1]'),
    ([1, float('nan')], [1, 1], 'bad at index [1]'),
    ([1, 2], [1, float('inf')], 'non-finite'),
])
def test_refuses_bad_input(measured, predicted, words):
    with pytest.raises(metrics.MetricsError) as e:
        metrics.regression_metrics(measured, predicted)
    assert words in str(e.value)


def test_transfer_metrics_rescale_by_the_median_ratio_then_score():
    # ratios measured / predicted = 2, 2, 1.818: scale 2, scaled predictions 2, 4, 6.6
    m = metrics.transfer_metrics([2.0, 4.0, 6.0], [1.0, 2.0, 3.3])
    assert m['scale'] == pytest.approx(2.0)
    assert m['mre_pct'] == pytest.approx(100 * 0.1 / 3)
    assert m['kendall_tau'] == pytest.approx(1.0) and m['share_within_10pct'] == pytest.approx(1.0)


def test_an_lpm_is_scored_on_another_table_raw_and_normalised():
    import pandas as pd

    class Doubling:  # stands in for an LPM: 2 ms per one-bit of the first edge's ops
        cells = 'normal'

        def predict_ms(self, x):
            return 1.0 + 2.0 * x[:, :8].argmax(1)

    bits = [('0' * k + '1' + '0' * (111 - k)) for k in (1, 2, 3)]
    df = pd.DataFrame({'normal_encoding': bits, 'latency_ms': [6.0, 10.0, 14.0], 'ref_ms': [2.0, 2.0, 2.0]})
    result = metrics.lpm_transfer(Doubling(), df)
    assert result['raw']['scale'] == pytest.approx(2.0) and result['raw']['mre_pct'] == pytest.approx(0.0)
    assert result['ref_normalised']['scale'] == pytest.approx(1.0)
    assert result['raw']['kendall_tau'] == pytest.approx(1.0)


def test_shipped_metrics_are_what_the_shipped_model_scores(repo_root):
    """metrics.json of the shipped predictor, recomputed: its table (recorded relative to the repository),
    split as recorded, scored by the shipped model."""
    import json
    import os

    from ladnas_tf.lpm import dataset, model as lpm, registry, training as lpm_run

    model = registry.load('cpu_tflite_cifar')
    with open(os.path.join(model.path, lpm.METRICS_FILE)) as f:
        shipped = json.load(f)
    df = dataset.load_tables([os.path.join(repo_root, t) for t in model.metadata['data']['tables']])
    fit, val, test = dataset.split_rows(df, shipped['split_seed'], shipped['test_fraction'],
                                        val_fraction=model.recipe.val_fraction)
    assert (len(fit), len(val), len(test)) == (shipped['train_size'], shipped['val_size'], shipped['test_size'])
    assert dataset.data_hash(test) == shipped['test_sha256']
    assert dataset.data_hash(pd.concat([fit, val]), with_reference=True) == model.metadata['data']['sha256']
    measured, views = lpm_run.score(model, fit, test)
    recomputed = _flat({**measured, **views})
    assert {'mre_pct', 'kendall_tau', 'vs_normalised.mre_pct', 'quiet.n'} <= recomputed.keys()
    assert recomputed == pytest.approx({k: _flat(shipped)[k] for k in recomputed}, rel=1e-6, abs=1e-9)


def _flat(d, prefix=''):
    """{'a': {'b': 1}} -> {'a.b': 1}: pytest.approx compares flat dicts only."""
    out = {}
    for key, value in d.items():
        out.update(_flat(value, f'{prefix}{key}.') if isinstance(value, dict) else {f'{prefix}{key}': value})
    return out


# ---- two tables compared (tools.compare_tables) ----

def _table(latency_table, path, latencies, ids, ref=10.0):
    """A table of DARTS_V2's cells (real encodings) under made-up arch_ids and latencies."""
    rows = [{c: 0 for c in table.COLUMNS} | latency_table.row(genotypes.DARTS_V2, ms, 0, 0, arch_id=i, ref_ms=ref)
            for i, ms in zip(ids, latencies)]
    return table.read(latency_table.write(path, pd.DataFrame(rows, columns=table.COLUMNS)))


def _compare(run_tool, *paths):
    return run_tool('compare_tables', '--tables=' + ','.join(map(str, paths)), timeout=120)


@pytest.mark.slow
def test_compare_tables_on_common_architectures(latency_table, tmp_path, run_tool):
    _table(latency_table, tmp_path / 'f32.csv', [1.0, 2.0, 3.0, 4.0, 9.0], ['a', 'b', 'c', 'd', 'only_f32'])
    _table(latency_table, tmp_path / 'same.csv', [2.0, 4.0, 6.0, 8.0, 1.0], ['a', 'b', 'c', 'd', 'only_same'])
    _table(latency_table, tmp_path / 'swap.csv', [1.0, 3.0, 2.0, 4.0], ['a', 'b', 'c', 'd'])
    same = _compare(run_tool, tmp_path / 'f32.csv', tmp_path / 'same.csv')
    assert same.returncode == 0, same.stderr
    assert 'n=4 common' in same.stdout and 'Kendall tau 1.000, Spearman rho 1.000' in same.stdout
    assert 'median ratio second/first 2.000' in same.stdout
    swap = _compare(run_tool, tmp_path / 'f32.csv', tmp_path / 'swap.csv')
    assert 'Kendall tau 0.667' in swap.stdout  # 5 of the 6 pairs keep their order: (5 - 1) / 6


def test_compare_tables_without_common_architectures_is_one_line(latency_table, tmp_path, run_tool):
    _table(latency_table, tmp_path / 'a.csv', [1.0, 2.0, 3.0], ['a', 'b', 'c'])
    _table(latency_table, tmp_path / 'x.csv', [3.0, 6.0], ['x', 'y'])
    bad = _compare(run_tool, tmp_path / 'a.csv', tmp_path / 'x.csv')
    assert bad.returncode == 1 and bad.stderr.strip().count('\n') == 0
    assert 'share 0 arch_id' in bad.stderr
