"""tools.pipeline end to end at tiny scale (C=4, 2 cells, 8x8 digits, a few steps): every stage's
outputs, a kill inside the training stage and the same command again ending with the files of a run
never killed, a finished run re-reported without redoing a stage, and one-line refusals."""
import json
import os
import signal

import numpy as np
import pytest

from ladnas_tf import pipeline, run_dir

TINY = ['--search_channels=4', '--search_layers=2', '--search_image_size=8', '--search_epochs=1',
        '--search_batch_size=16', '--search_max_steps_per_epoch=2', '--nomeasure_searched',
        '--channels=4', '--layers=2', '--image_size=8', '--epochs=2', '--batch_size=64', '--cutout=0',
        '--validation_fraction=0.1', '--calibration_images=16', '--tflite_eval_limit=40', '--latency_runs=5']
STEPS_PER_EPOCH = int(1437 * 0.9) // 64  # digits train minus the validation tenth, batch 64


def _pipeline(run_tool, model_dir, *extra, env=None):
    return run_tool('pipeline', f'--model_dir={model_dir}', *TINY, *extra,
                    env={'TF_CPP_MIN_LOG_LEVEL': '2', **(env or {})}, timeout=900)


def _weights(model_dir):
    import keras
    return keras.models.load_model(os.path.join(model_dir, 'train', 'final.keras')).get_weights()


@pytest.mark.slow
def test_pipeline_end_to_end_with_a_kill_in_training(run_tool, tmp_path):
    straight = tmp_path / 'straight'
    result = _pipeline(run_tool, straight)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((straight / 'report.json').read_text())
    for name in ('model_float32.tflite', 'model_int8.tflite', 'export.json'):
        assert (straight / 'export' / name).is_file()
    assert [r['model'] for r in report['models']] == ['Keras (final.keras)', 'TFLite float32', 'TFLite int8']
    assert all(0 <= r['test_top1'] <= 100 for r in report['models'])
    assert report['models'][1]['test_top1'] is not None and report['models'][1]['latency_ms'] > 0
    assert report['latency_target'] == 'cpu_tflite' and report['searched_network']['predicted_ms'] > 0
    assert len(report['cell_nodes']['normal']) == 4 and 'test split' in report['split_of']['test_top1']
    markdown = (straight / 'report.md').read_text()
    assert '| TFLite int8 |' in markdown and 'normal cell' in markdown
    assert 'model_int8.tflite' in result.stdout and 'report:' in result.stdout

    # Killed inside the training stage (epoch 2), then the same command: the search is skipped, the
    # training resumes from its checkpoint, and the run ends with the weights and files of `straight`.
    killed = tmp_path / 'killed'
    victim = _pipeline(run_tool, killed, env={run_dir.KILL_AT_STEP_ENV: str(STEPS_PER_EPOCH + 3)})
    assert victim.returncode == -signal.SIGKILL, victim.stderr[-3000:]
    assert (killed / 'search' / 'summary.json').is_file() and not (killed / 'train' / 'summary.json').exists()
    resumed = _pipeline(run_tool, killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'search: done before, skipped' in resumed.stderr and 'resumed from' in resumed.stderr
    for a, b in zip(_weights(str(killed)), _weights(str(straight))):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    again = json.loads((killed / 'report.json').read_text())
    for a, b in zip(again['models'], report['models']):
        assert (a['model'], a['test_top1'], a['file_bytes']) == (b['model'], b['test_top1'], b['file_bytes'])
    assert again['genotype'] == report['genotype']

    # Finished: every stage skipped, the report written again from the stages' outputs.
    before = (killed / 'export' / 'model_int8.tflite').stat().st_mtime_ns
    rerun = _pipeline(run_tool, killed)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for stage in ('search', 'export', 'latency'):
        assert f'{stage}: done before, skipped' in rerun.stderr
    assert 'holds a finished run' in rerun.stderr
    assert (killed / 'export' / 'model_int8.tflite').stat().st_mtime_ns == before

    # Another configuration in the same directory: one line, exit 1, nothing touched.
    listing = sorted(os.listdir(killed))
    other = _pipeline(run_tool, killed, '--epochs=3')
    assert other.returncode == 1
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and '--overwrite' in lines[0]
    assert 'other settings (recipe.epochs: 2 -> 3)' in lines[0]
    assert sorted(os.listdir(killed)) == listing
    assert json.loads((killed / pipeline.CONFIG_FILE).read_text())['recipe']['epochs'] == 2


@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(run_tool, tmp_path):
    for flag, message in (('--validation_fraction=1.0', 'validation_fraction must lie in [0, 1)'),
                          ('--dataset=imagenet_folder:' + str(tmp_path / 'missing'), 'does not exist')):
        model_dir = tmp_path / 'run'
        result = _pipeline(run_tool, model_dir, flag)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not (tmp_path / 'run').exists()
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'notes.txt').write_text('keep me')
    result = _pipeline(run_tool, tmp_path / 'run')
    assert result.returncode == 1 and 'holds no pipeline.json' in result.stderr
    assert os.listdir(tmp_path / 'run') == ['notes.txt']
