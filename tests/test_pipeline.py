"""tools.pipeline end to end at tiny scale (C=4, 2 cells, 8x8 digits, a few steps): every stage's
outputs, a kill inside the training stage and the same command again ending with the files of a run
never killed, a finished run re-reported without redoing a stage, and one-line refusals. The pipeline
follows the deployment (an int8 one searches with an int8 predictor) and its report sets every
prediction beside its measurement, each a multiple of DARTS_V2 on its own device."""
import json
import os
import signal

import numpy as np
import pytest

from ladnas_tf import genotypes, pipeline, run_dir, search
from ladnas_tf.graph.setting import Setting
from ladnas_tf.profiling.targets.base import tflite_file

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


# ---- the deployment: its file's latency beside the prediction, each on its own device ----

TINY_NETWORK = Setting('cifar', 4, 2, 8, 1, 10)


def _exported(folder):
    """export/ as run_export leaves it (PDARTS at TINY_NETWORK, written directly), and its record."""
    from ladnas_tf import export
    folder.mkdir()
    files = {}
    for name in ('float32', 'int8'):
        path = folder / f'model_{name}.tflite'
        content = tflite_file(genotypes.PDARTS, TINY_NETWORK, 'writer', name)[0]
        path.write_bytes(content)
        run_dir.write_json(export.summary_path(str(path)), {
            'setting': 'cifar', 'channels': 4, 'cells': 2, 'num_classes': 10, 'image_size': 8, 'int8': name == 'int8'})
        files[name] = {'file': path.name, 'file_bytes': len(content), 'test_top1': 50.0}
    return {'files': files, 'test_images': 40, 'calibration_images': 16}


def test_each_file_is_timed_against_darts_v2_of_its_network_and_format(tmp_path, monkeypatch):
    exported = _exported(tmp_path / 'export')
    references = {}
    time_files = pipeline.profiler.time_files

    def recording(target, files, runs=20, reference=None, warmup=5):
        references.update({name: reference for name in files})
        return time_files(target, files, runs=runs, reference=reference, warmup=warmup)
    monkeypatch.setattr(pipeline.profiler, 'time_files', recording)
    config = pipeline.PipelineConfig(search=search.SearchConfig(lambda_=0.0, lpm_dir=''), latency_runs=3)
    result = pipeline.run_latency(config, str(tmp_path), exported, {}, log=lambda line: None)
    for name in ('float32', 'int8'):
        assert references[name] == tflite_file(genotypes.DARTS_V2, TINY_NETWORK, 'writer', name)[0], name
        timed = result['files'][name]
        assert timed['setting'] == TINY_NETWORK.key and timed['reference_ms'] > 0
        assert timed['vs_reference'] == pytest.approx(timed['latency_ms'] / timed['reference_ms'])
        assert timed['measured_on'].endswith(f'[cpu_tflite, {name}, 1 thread]')
    assert json.loads((tmp_path / pipeline.LATENCY_FILE).read_text()) == json.loads(json.dumps(result))


PREDICTOR_DEVICE = 'Predictor CPU [cpu_tflite_int8, int8, 1 thread]'
THIS_MACHINE = 'This CPU [cpu_tflite_int8, {}, 1 thread]'


def _report(tmp_path, deployed):
    """report() of made-up stage results: a prediction on one device, files measured on another."""
    exported = {'files': {name: {'file': f'model_{name}.tflite', 'file_bytes': 1000, 'test_top1': 50.0}
                          for name in ('float32', 'int8')}, 'test_images': 40}
    searched = {'genotype': str(genotypes.PDARTS), 'genotype_id': 'abc', 'steps': 2,
                'genotype_json': json.loads(genotypes.PDARTS.to_json())}
    latency = {'target': 'cpu_tflite_int8', 'threads': 1, 'device': 'This CPU',
               'searched': {'setting': 'cifar-C36-N20-32px-b1-k10', 'predicted_ms': 13.43, 'unit_ms': 18.92,
                            'predicted_vs_reference': 13.43 / 18.92, 'predicted_on': PREDICTOR_DEVICE},
               'files': {name: {'latency_ms': ms, 'reference_ms': ref, 'vs_reference': ms / ref,
                                'setting': TINY_NETWORK.key, 'measured_on': THIS_MACHINE.format(name)}
                         for name, ms, ref in (('float32', 0.02, 0.04), ('int8', 0.0366, 0.05))}}
    config = pipeline.PipelineConfig(search=search.SearchConfig(lambda_=0.0, lpm_dir=''))
    return pipeline.report(config, str(tmp_path), searched, {'test_top1': 51.0}, exported, latency, 1.0, deployed)


def test_the_report_sets_the_deployed_file_beside_its_prediction(tmp_path):
    payload = _report(tmp_path, 'int8')
    deployed = payload['deployed']
    assert deployed['format'] == 'int8' and deployed['file'] == os.path.join('export', 'model_int8.tflite')
    assert deployed['predicted_vs_reference'] == pytest.approx(0.71, abs=0.005)
    assert deployed['measured_vs_reference'] == pytest.approx(0.0366 / 0.05)
    assert (deployed['predicted_on'], deployed['measured_on']) == (PREDICTOR_DEVICE, THIS_MACHINE.format('int8'))
    markdown = (tmp_path / pipeline.REPORT_MD).read_text()
    line = next(line for line in markdown.splitlines() if line.startswith('Deployed as int8'))
    assert (f'predicted 0.71x DARTS_V2 on {PREDICTOR_DEVICE} (13.43 vs 18.92 ms there) at cifar-C36-N20-32px-b1-k10'
            in line)
    assert f"measured 0.73x DARTS_V2 on {THIS_MACHINE.format('int8')} (0.0366 vs 0.05 ms there)" in line
    assert '| TFLite int8 | 50.00 | export/model_int8.tflite | 1,000 | 0.73 | 0.037 |' in markdown
    assert 'on This CPU [cpu_tflite_int8, 1 thread(s)]' in markdown  # the table's machine, named
    assert json.loads((tmp_path / pipeline.REPORT_JSON).read_text()) == json.loads(json.dumps(payload))
    assert _report(tmp_path, 'float32')['deployed']['measured_vs_reference'] == pytest.approx(0.5)


def test_a_predictor_of_another_format_than_the_deployment_writes_nothing(tmp_path, predictors):
    lpm = predictors.save(tmp_path / 'float32_lpm', cells='both')
    config = pipeline.PipelineConfig(search=search.SearchConfig(lpm_dir=lpm, deploy_format='int8'))
    with pytest.raises(search.SearchError, match='predicts float32 latency, the deployment is int8') as error:
        pipeline.run(config, str(tmp_path / 'run'), log=lambda line: None)
    assert '\n' not in str(error.value) and not (tmp_path / 'run').exists()


def _without_timings(payload):
    """A report without what the clock decides (durations, latencies and their ratios)."""
    if isinstance(payload, dict):
        return {k: _without_timings(v) for k, v in payload.items()
                if k != 'seconds' and not k.startswith(('measured_', 'latency_ms', 'reference_ms', 'vs_'))}
    if isinstance(payload, list):
        return [_without_timings(v) for v in payload]
    return payload


@pytest.mark.slow
def test_an_int8_deployment_searches_with_an_int8_predictor(run_tool, tmp_path, predictors):
    """--deploy_format follows the predictor: an int8 one makes the report set the int8 file beside its
    prediction; the same command twice gives the same report (what the clock decides aside)."""
    lpm = predictors.save(tmp_path / 'int8_lpm', cells='both', target='cpu_tflite_int8', device='Int8 CPU')
    reports = []
    for name in ('a', 'b'):
        result = _pipeline(run_tool, tmp_path / name, f'--lpm={lpm}')
        assert result.returncode == 0, result.stderr[-3000:]
        reports.append(json.loads((tmp_path / name / pipeline.REPORT_JSON).read_text()))
    deployed = reports[0]['deployed']
    assert deployed['format'] == 'int8' and deployed['file'].endswith('model_int8.tflite')
    assert deployed['predicted_on'] == 'Int8 CPU [cpu_tflite_int8, int8, 1 thread]'
    assert deployed['measured_on'].endswith('[cpu_tflite_int8, int8, 1 thread]') and deployed['measured_ms'] > 0
    assert reports[0]['latency_target'] == 'cpu_tflite_int8'
    assert 'Deployed as int8' in result.stdout and 'x DARTS_V2 on Int8 CPU' in result.stdout
    assert _without_timings(reports[0]) == _without_timings(reports[1])
