"""The sweep's plan, table and figure (the searches themselves are tests/test_search.py's)."""
import os

import numpy as np
import pandas as pd
import pytest

from ladnas_tf import search, sweep

LPM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data', 'lpm_cpu_tflite_cifar')


def test_plan_keeps_the_lpm_for_lambda_runs_and_drops_it_for_eta_runs():
    base = search.SearchConfig(lambda_=0.1, lpm_dir=LPM, target_latency_ms=10.0)
    plan = dict(sweep.runs(base, lambdas=[0, 0.2], etas=[0.1]))
    assert list(plan) == ['lambda_0', 'lambda_0.2', 'eta_0.1']
    assert plan['lambda_0'].lambda_ == 0 and plan['lambda_0'].lpm_dir == LPM
    assert plan['lambda_0.2'].target_latency_ms is None  # a fixed lambda_, not the target mode
    assert plan['eta_0.1'].lpm_dir is None and plan['eta_0.1'].lambda_ == 0 and plan['eta_0.1'].eta == 0.1
    with pytest.raises(search.SearchError, match='at least one'):
        sweep.runs(base)


def test_normalised_latency_cancels_the_load_and_the_figure_is_written(tmp_path):
    df = pd.DataFrame({'run': ['lambda_0', 'lambda_0.1', 'eta_0.1'], 'lambda_': [0, 0.1, 0], 'eta': [0, 0, 0.1],
                       'supernet_valid_accuracy': [40.0, 39.0, 38.0], 'predicted_ms': [20, 16, np.nan],
                       'measured_ms': [20.0, 32.0, 15.0], 'reference_ms': [18.0, 36.0, 18.0],
                       'macs': [5e8, 4e8, 3e8]})
    out = sweep.normalise(df)
    # lambda_0.1 was timed while everything ran 2x slower: normalised, it is 16 ms at the median load
    np.testing.assert_allclose(out['measured_norm_ms'], [20.0, 16.0, 15.0])
    sweep.plot(out, str(tmp_path / 'sweep.png'))
    assert (tmp_path / 'sweep.png').stat().st_size > 10_000
