"""The sweep's plan, table and figure, its shares and their merge (the searches themselves are tests/test_search.py's;
one slow test runs a tiny sweep whole and split over two processes)."""
import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest

from ladnas_tf import search, sweep
from ladnas_tf.cost import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LPM = os.path.join(REPO, 'ladnas_tf', 'predictors', 'cpu_tflite_cifar')


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


def test_error_plan_runs_every_model_at_each_lambda_seed_major(tmp_path):
    base = search.SearchConfig(lpm_dir=LPM, seed=5)
    specs = [errors.Spec('systematic', 0.1), errors.Spec('predictor', 0.0, str(tmp_path / 'lpm_n100'))]
    plan = sweep.runs(base, lambdas=[0.2, 0], etas=[0.1], latency_errors=specs, error_lambdas=[0.2],
                      seeds=[0, 1], eta_seeds=[0])
    names = [name for name, _ in plan]
    assert names == ['lambda_0.2-seed0', 'lambda_0-seed0', 'eta_0.1-seed0', 'lambda_0.2-systematic_0.1-seed0',
                     'lambda_0.2-predictor_lpm_n100-seed0',
                     'lambda_0.2-seed1', 'lambda_0-seed1', 'lambda_0.2-systematic_0.1-seed1',
                     'lambda_0.2-predictor_lpm_n100-seed1']
    configs = dict(plan)
    assert configs['lambda_0.2-seed1'].seed == 1 and configs['lambda_0.2-seed1'].latency_error == 'none'
    sys_run = configs['lambda_0.2-systematic_0.1-seed0']
    assert (sys_run.latency_error, sys_run.latency_error_size, sys_run.lambda_) == ('systematic', 0.1, 0.2)
    assert configs['lambda_0.2-predictor_lpm_n100-seed1'].latency_error_lpm == str(tmp_path / 'lpm_n100')
    assert configs['eta_0.1-seed0'].latency_error == 'none' and configs['eta_0.1-seed0'].lpm_dir is None
    with pytest.raises(search.SearchError, match='error_lambdas'):
        sweep.runs(base, lambdas=[0], latency_errors=specs)


def test_a_finished_search_is_read_back_only_for_its_own_settings(tmp_path):
    config = search.SearchConfig(lpm_dir=LPM, lambda_=0.2)
    run_dir = tmp_path / 'run'
    assert sweep.finished_summary(str(run_dir), config) is None
    search.prepare_run_dir(str(run_dir), config)
    assert sweep.finished_summary(str(run_dir), config) is None  # not finished yet
    (run_dir / 'summary.json').write_text(json.dumps({'steps': 3}))
    assert sweep.finished_summary(str(run_dir), config) == {'steps': 3}
    # a report-only setting: the summary must have been evaluated as asked, whatever config.json says
    asked = dataclasses.replace(config, final_eval_batches=2)
    assert sweep.finished_summary(str(run_dir), asked) is None
    (run_dir / 'summary.json').write_text(json.dumps({'steps': 3, 'supernet_valid_images': 2 * config.batch_size}))
    assert sweep.finished_summary(str(run_dir), asked)['steps'] == 3
    other = dataclasses.replace(config, latency_error='systematic', latency_error_size=0.2)
    assert sweep.finished_summary(str(run_dir), other) is None


def test_errors_table_sets_runs_against_the_plain_search_and_the_flops_aware_family(tmp_path):
    rows = [  # run, lambda_, eta, seed, error, size, mre, tau, acc, ms, macs
        ('lambda_0-seed0', 0, 0, 0, 'none', 0, 0.0, 1.0, 40.0, 10.0, 500e6),
        ('lambda_0-seed1', 0, 0, 1, 'none', 0, 0.0, 1.0, 42.0, 10.0, 500e6),
        ('eta_0.2-seed0', 0, 0.2, 0, 'none', 0, np.nan, np.nan, 38.0, 6.0, 300e6),
        ('lambda_0.2-seed0', 0.2, 0, 0, 'none', 0, 0.0, 1.0, 41.0, 5.0, 300e6),
        ('lambda_0.2-systematic_0.4-seed0', 0.2, 0, 0, 'systematic', 0.4, 0.41, 0.2, 39.0, 8.0, 400e6),
        ('lambda_0.2-systematic_0.4-seed1', 0.2, 0, 1, 'systematic', 0.4, 0.39, 0.3, 41.0, 9.0, 450e6)]
    df = pd.DataFrame(rows, columns=['run', 'lambda_', 'eta', 'seed', 'latency_error', 'latency_error_size',
                                     'error_mre', 'error_kendall_tau', 'supernet_valid_accuracy',
                                     'measured_ms', 'macs'])
    df['reference_ms'] = 9.0
    per_run, points = sweep.errors_table(sweep.normalise(df))
    run = per_run.set_index('run')
    assert run.loc['lambda_0.2-seed0', 'latency_cut'] == pytest.approx(-0.5)
    # FLOPs-aware family: (300M, 6 ms) and (500M, 10 ms): 8 ms at 400M, so systematic's 8 ms ties it
    assert run.loc['lambda_0.2-systematic_0.4-seed0', 'vs_flops_aware'] == pytest.approx(0.0)
    assert run.loc['lambda_0.2-seed0', 'vs_flops_aware'] == pytest.approx(5 / 6 - 1)
    sys_point = points[points['latency_error'] == 'systematic'].iloc[0]
    assert sys_point['seeds'] == 2 and sys_point['latency_cut'] == pytest.approx(-0.15)
    assert (sys_point['latency_cut_min'], sys_point['latency_cut_max']) == pytest.approx((-0.2, -0.1))
    assert sys_point['error_mre'] == pytest.approx(0.40)
    sweep.plot_errors(points, per_run, str(tmp_path / 'errors.png'))
    assert (tmp_path / 'errors.png').stat().st_size > 10_000


def test_finished_only_reports_the_finished_searches_and_runs_none(tmp_path):
    base = search.SearchConfig(lpm_dir=LPM)
    plan = dict(sweep.runs(base, lambdas=[0, 0.2], latency_errors=[errors.Spec('systematic', 0.2)],
                           error_lambdas=[0.2]))
    with pytest.raises(search.SearchError, match='no search of this sweep has finished'):
        sweep.run(base, str(tmp_path), lambdas=[0, 0.2], finished_only=True)
    for name, ms, macs in (('lambda_0', 20.0, 5e8), ('lambda_0.2', 12.0, 3e8)):
        search.prepare_run_dir(str(tmp_path / name), plan[name])
        (tmp_path / name / 'summary.json').write_text(json.dumps({
            'supernet_valid_accuracy': 40.0, 'steps': 3, 'seconds': 1.0, 'genotype': 'g',
            'latency': {'predicted_ms': ms, 'measured_ms': ms / 2, 'reference_ms': 9.0, 'macs': macs}}))
    df = sweep.run(base, str(tmp_path), lambdas=[0, 0.2], latency_errors=[errors.Spec('systematic', 0.2)],
                   error_lambdas=[0.2], finished_only=True, log=lambda *_: None)
    assert list(df['run']) == ['lambda_0', 'lambda_0.2']  # the systematic run never started
    assert not (tmp_path / 'lambda_0.2-systematic_0.2').exists() and (tmp_path / sweep.TABLE).exists()


# ---- a sweep over several machines ----

def test_shares_are_disjoint_cover_the_plan_and_name_bad_points():
    plan = sweep.runs(search.SearchConfig(lpm_dir=LPM), lambdas=[0, 0.1, 0.2], etas=[0.1, 0.2])
    shares = [sweep.select(plan, worker_index=i, num_workers=2) for i in range(2)]
    assert [n for n, _ in shares[0]] == ['lambda_0', 'lambda_0.2', 'eta_0.2']
    assert [n for n, _ in shares[1]] == ['lambda_0.1', 'eta_0.1']
    picked = sweep.select(plan, points=['eta_0.1', 'lambda_0.1', 'lambda_0'], worker_index=1, num_workers=2)
    assert [n for n, _ in picked] == ['lambda_0.1']  # plan order, then round robin
    assert sweep.select(plan, num_workers=9, worker_index=8) == []
    with pytest.raises(search.SearchError, match=r'unknown sweep point\(s\) lambda_9 \(the plan: lambda_0, '):
        sweep.select(plan, points=['lambda_9'])
    with pytest.raises(search.SearchError, match=r'worker_index must lie in \[0, 2\)'):
        sweep.select(plan, worker_index=2, num_workers=2)


def _finish(run_dir, config, ms):
    """A finished search's run directory (its settings and a summary), as search.search leaves it."""
    search.prepare_run_dir(run_dir, config)
    with open(os.path.join(run_dir, 'summary.json'), 'w') as f:
        json.dump({'supernet_valid_accuracy': 40.0, 'steps': 3, 'seconds': 1.0, 'genotype': f'g{ms}',
                   'latency': {'predicted_ms': ms, 'measured_ms': ms / 2, 'reference_ms': 9.0, 'macs': ms * 1e7}}, f)


def test_merge_gathers_finished_shares_and_names_the_missing_points(tmp_path):
    base = search.SearchConfig(lpm_dir=LPM)
    plan = dict(sweep.runs(base, lambdas=[0, 0.1, 0.2]))
    _finish(str(tmp_path / 'a' / 'lambda_0'), plan['lambda_0'], 20.0)
    _finish(str(tmp_path / 'b' / 'lambda_0.1'), plan['lambda_0.1'], 16.0)
    search.prepare_run_dir(str(tmp_path / 'b' / 'lambda_0.2'), plan['lambda_0.2'])  # started, never finished
    merged, sources = str(tmp_path / 'merged'), [str(tmp_path / 'a'), str(tmp_path / 'b')]
    with pytest.raises(search.SearchError, match=r'finished in none of .*: lambda_0.2 \(run them'):
        sweep.merge(base, merged, sources, lambdas=[0, 0.1, 0.2], log=lambda *_: None)
    _finish(str(tmp_path / 'a' / 'lambda_0.2'), plan['lambda_0.2'], 12.0)
    df = sweep.merge(base, merged, sources, lambdas=[0, 0.1, 0.2], log=lambda *_: None)
    assert list(df['run']) == ['lambda_0', 'lambda_0.1', 'lambda_0.2']
    assert list(df['genotype']) == ['g20.0', 'g16.0', 'g12.0']
    assert (tmp_path / 'merged' / sweep.TABLE).is_file() and (tmp_path / 'merged' / sweep.FIGURE).is_file()
    # a point already in the merged directory stays as it is
    before = os.path.getmtime(tmp_path / 'merged' / 'lambda_0' / 'summary.json')
    sweep.merge(base, merged, sources, lambdas=[0, 0.1, 0.2], log=lambda *_: None)
    assert os.path.getmtime(tmp_path / 'merged' / 'lambda_0' / 'summary.json') == before


# Two tiny searches (8x8 digits, C=4, 2 cells, 1 epoch of 2 steps), seeds 0 and 1.
SWEEP = ['-m', 'tools.sweep', '--dataset=digits', '--image_size=8', '--channels=4', '--layers=2', '--batch_size=8',
         '--epochs=1', '--max_steps_per_epoch=2', '--lpm=', '--lambdas=0', '--seeds=0,1', '--retime_rounds=0',
         '--measure_latency=false', '--progress=false']


def _sweep(*args):
    import subprocess
    import sys
    env = {**os.environ, 'PYTHONPATH': REPO, 'TF_CPP_MIN_LOG_LEVEL': '2'}
    return subprocess.Popen([sys.executable, *SWEEP, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finished(proc, timeout=1500):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out, err


@pytest.mark.slow
def test_a_sweep_split_over_two_processes_merges_to_the_one_process_table(tmp_path):
    whole = _sweep(f'--out_dir={tmp_path / "whole"}')
    shares = [_sweep(f'--out_dir={tmp_path / f"part{i}"}', '--num_workers=2', f'--worker_index={i}') for i in (0, 1)]
    for proc in [whole, *shares]:
        _finished(proc)
    assert sorted(os.listdir(tmp_path / 'part0')) == ['lambda_0-seed0']  # a share writes no table
    assert sorted(os.listdir(tmp_path / 'part1')) == ['lambda_0-seed1']
    _finished(_sweep(f'--out_dir={tmp_path / "merged"}', f'--merge_from={tmp_path / "part0"},{tmp_path / "part1"}'))
    one, merged = (pd.read_csv(tmp_path / d / sweep.TABLE) for d in ('whole', 'merged'))
    pd.testing.assert_frame_equal(merged.drop(columns='seconds'), one.drop(columns='seconds'))
    assert (tmp_path / 'merged' / sweep.FIGURE).is_file()
    # The same share again: its point is finished, read back, not searched again.
    summary = tmp_path / 'part0' / 'lambda_0-seed0' / 'summary.json'
    before = summary.stat().st_mtime_ns
    _, err = _finished(_sweep(f'--out_dir={tmp_path / "part0"}', '--num_workers=2', '--worker_index=0'))
    assert 'lambda_0-seed0: finished, read back' in err and summary.stat().st_mtime_ns == before


def test_a_row_gives_prediction_and_measurement_as_multiples_of_darts_v2_with_their_devices():
    summary = {'supernet_valid_accuracy': 40.0, 'steps': 2, 'seconds': 1.0, 'genotype': 'g',
               'latency': {'predicted_ms': 13.43, 'unit_ms': 18.92, 'predicted_vs_reference': 13.43 / 18.92,
                           'predicted_on': 'P [cpu_tflite, float32, 1 thread]', 'measured_ms': 5.49,
                           'reference_ms': 7.52, 'measured_vs_reference': 5.49 / 7.52,
                           'measured_on': 'M [cpu_tflite, float32, 1 thread]'}}
    df = pd.DataFrame([sweep.row('lambda_0.1', search.SearchConfig(lpm_dir=LPM), summary)])
    assert df['predicted_vs_reference'][0] == pytest.approx(0.7098, abs=1e-4)
    assert df['measured_vs_reference'][0] == pytest.approx(0.7301, abs=1e-4)
    assert sweep.devices(df) == {'predicted': ['P [cpu_tflite, float32, 1 thread]'],
                                 'measured': ['M [cpu_tflite, float32, 1 thread]']}
    assert sweep.devices(pd.DataFrame({'run': ['old']})) == {'predicted': [], 'measured': []}


def test_without_a_plain_run_the_figure_plots_multiples_of_darts_v2(tmp_path):
    df = sweep.normalise(pd.DataFrame({
        'run': ['lambda_0.1', 'lambda_0.2'], 'lambda_': [0.1, 0.2], 'eta': [0, 0], 'supernet_valid_accuracy': [40, 39],
        'predicted_ms': [16.0, 12.0], 'unit_ms': [20.0, 20.0], 'measured_ms': [8.0, 6.0], 'reference_ms': [10.0, 10.0],
        'macs': [4e8, 3e8]}))
    sweep.plot(df, str(tmp_path / 'sweep.png'))
    assert (tmp_path / 'sweep.png').stat().st_size > 10_000
