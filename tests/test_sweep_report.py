"""benchmarks.sweep_report: each latency-aware run against its own seed's FLOPs-aware line at equal MACs."""
import json

import numpy as np
import pandas as pd
import pytest

from benchmarks import sweep_report


def _row(run, seed, lambda_, eta, macs_m, ms, acc):
    return dict(run=run, seed=seed, lambda_=lambda_, eta=eta, macs=macs_m * 1e6, retimed_ms=ms, retimed_ref_ms=20.0,
                measured_norm_ms=ms, reference_ms=20.0, predicted_vs_reference=np.nan if eta else ms / 21,
                supernet_valid_accuracy=acc, genotype='g')


@pytest.fixture()
def table():
    return pd.DataFrame([_row('lambda_0.2-seed0', 0, 0.2, 0, 300, 15.0, 37.0),
                         _row('eta_0.1-seed0', 0, 0, 0.1, 400, 24.0, 37.5),
                         _row('eta_0.2-seed0', 0, 0, 0.2, 200, 14.0, 36.5),
                         _row('lambda_0.2-seed1', 1, 0.2, 0, 450, 20.0, 38.0),  # beyond seed 1's range
                         _row('eta_0.1-seed1', 1, 0, 0.1, 400, 30.0, 38.0),
                         _row('eta_0.2-seed1', 1, 0, 0.2, 100, 10.0, 36.0)])


def test_each_seed_is_compared_with_its_own_flops_aware_line(table):
    out, column = sweep_report.compare(table)
    assert column == 'retimed_ms'
    seed0 = out.set_index('run').loc['lambda_0.2-seed0']
    assert seed0['flops_aware_ms'] == pytest.approx(19.0)  # halfway between (200, 14) and (400, 24)
    assert seed0['vs_flops_aware'] == pytest.approx(15 / 19 - 1)
    assert seed0['accuracy_vs_flops_aware'] == pytest.approx(0.0)
    assert seed0['x_darts_v2'] == pytest.approx(0.75)
    # no extrapolation: seed 1's latency-aware run lies beyond its FLOPs-aware MACs
    assert np.isnan(out.set_index('run').loc['lambda_0.2-seed1', 'vs_flops_aware'])


def test_main_writes_csv_figure_and_a_json_that_says_how(table, tmp_path):
    sweep_dir = tmp_path / 'sweep'
    sweep_dir.mkdir()
    table.to_csv(sweep_dir / 'sweep.csv', index=False)
    out = tmp_path / 'report'
    sweep_report.main([f'--sweep_dir={sweep_dir}', f'--out={out}', '--sweep_command=python -m tools.sweep'])
    text = (tmp_path / 'report.json').read_text()
    assert 'NaN' not in text  # strict JSON: a missing baseline is null
    record = json.loads(text)
    assert record['sweep_command'] == 'python -m tools.sweep' and record['commit'] and record['machine']
    assert record['beats_flops_aware_on_every_seed'] is False  # seed 1 has no equal-MACs baseline
    assert '| lambda_0.2-seed0 | 0 | 300 | 15.00 | 0.750 |' in record['summary_markdown']
    assert (tmp_path / 'report.png').stat().st_size > 0
    assert len(pd.read_csv(tmp_path / 'report.csv')) == 6


def test_the_accuracy_bar_is_a_loss_of_at_most_one_point(table, tmp_path):
    table.loc[table['run'] == 'lambda_0.2-seed1', 'macs'] = 300e6  # now inside seed 1's range
    table.loc[table['run'] == 'lambda_0.2-seed0', 'supernet_valid_accuracy'] = 39.5  # 2.5 points better: fine
    (tmp_path / 'sweep').mkdir()
    table.to_csv(tmp_path / 'sweep' / 'sweep.csv', index=False)
    sweep_report.main([f'--sweep_dir={tmp_path / "sweep"}', f'--out={tmp_path / "r"}'])
    record = json.loads((tmp_path / 'r.json').read_text())
    assert record['accuracy_no_worse_than_1_point'] is True
    table.loc[table['run'] == 'lambda_0.2-seed0', 'supernet_valid_accuracy'] = 35.9  # 1.1 points worse
    table.to_csv(tmp_path / 'sweep' / 'sweep.csv', index=False)
    sweep_report.main([f'--sweep_dir={tmp_path / "sweep"}', f'--out={tmp_path / "r"}'])
    assert json.loads((tmp_path / 'r.json').read_text())['accuracy_no_worse_than_1_point'] is False
