"""The search loop on tiny in-memory data: its outputs, the run-directory rules, resume after a real
SIGKILL, and 2 replicas against 1 on the same global batch."""
import json
import os
import re
import shutil
import textwrap

import numpy as np
import pytest

from ladnas_tf import architect, run_dir, search, search_space
from ladnas_tf.lpm import registry

TINY = dict(dataset='memory', epochs=2, batch_size=8, channels=4, layers=3, seed=0, learning_rate=0.05,
            arch_learning_rate=3e-3, lambda_=0.0, lpm_dir=None)

# Learnable tiny data: 3 classes, each a fixed 8x8 pattern plus noise.
DATA_SNIPPET = '''
import numpy as np
from ladnas_tf import search
def tiny_data(n=48, batch_size=8, seed=0):
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(3, 8, 8, 3))
    labels = rng.integers(0, 3, n)
    images = patterns[labels] + 0.5 * rng.normal(size=(n, 8, 8, 3))
    return search.array_search_data(images, labels, 3, batch_size, seed=seed)
'''
exec(DATA_SNIPPET)


def _config(**overrides):
    return search.SearchConfig.from_json({**TINY, **overrides})


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp('run') / 'search')
    lines = []
    summary = search.search(_config(), model_dir, data=tiny_data(), progress=False, log=lines.append)
    return model_dir, summary, lines


@pytest.mark.slow
def test_a_search_writes_its_outputs(finished):
    model_dir, summary, lines = finished
    genotype = search_space.parse(open(os.path.join(model_dir, 'genotype.json')).read())
    assert str(genotype) == summary['genotype']
    saved = json.load(open(os.path.join(model_dir, 'summary.json')))
    assert saved['steps'] == 2 * 3 and saved['epochs'] == 2  # 24 weight examples / batch 8 = 3 steps
    assert 0 <= saved['supernet_valid_accuracy'] <= 100 and saved['supernet_train_accuracy'] > 0
    assert saved['seconds'] > 0
    assert json.load(open(os.path.join(model_dir, search.CONFIG_FILE)))['channels'] == 4
    assert os.path.isfile(os.path.join(model_dir, 'cells', 'normal.dot'))
    assert os.path.isfile(os.path.join(model_dir, 'cells', 'reduce.dot'))
    assert os.listdir(os.path.join(model_dir, 'tensorboard'))
    assert sum('genotype Genotype(' in line for line in lines) == 2  # logged every epoch


@pytest.mark.slow
def test_tensorboard_holds_losses_alpha_images_and_genotype(finished):
    import tensorflow as tf
    model_dir = finished[0]
    tags = set()
    for name in os.listdir(os.path.join(model_dir, 'tensorboard')):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(model_dir, 'tensorboard', name)):
            tags.update(v.tag for v in event.summary.value)
    assert {'train/loss', 'train/learning_rate', 'arch/loss', 'epoch/valid_accuracy', 'epoch/train_accuracy',
            'alpha/normal', 'alpha/reduce', 'genotype'} <= tags


def _files(model_dir):
    return {os.path.join(root, name): open(os.path.join(root, name), 'rb').read()
            for root, _, names in os.walk(model_dir) for name in names}


@pytest.mark.slow
def test_a_finished_run_run_again_changes_nothing(finished):
    model_dir, summary, _ = finished
    before, lines = _files(model_dir), []
    again = search.search(_config(), model_dir, data=tiny_data(), progress=False, log=lines.append)
    assert again == json.loads(json.dumps(summary))  # the saved summary, as it was
    assert _files(model_dir) == before  # no figure rewritten, no new TensorBoard events file
    assert any('finished' in line for line in lines)
    assert summary['supernet_valid_images'] == 24  # the whole architecture half (24 examples)


def test_a_resumed_search_refuses_an_lpm_replaced_at_the_same_path(tmp_path, repo_root):
    lpm_dir = tmp_path / 'lpm'
    shutil.copytree(os.path.join(repo_root, 'ladnas_tf', 'predictors', 'cpu_tflite_cifar'), lpm_dir)
    config = _config(lambda_=0.1, lpm_dir=str(lpm_dir))
    search.prepare_run_dir(str(tmp_path / 'run'), config)
    assert search.prepare_run_dir(str(tmp_path / 'run'), config) is True  # the same predictor: resumes
    meta = json.loads((lpm_dir / 'metadata.json').read_text())
    meta['epochs_run'] += 1  # another predictor behind the same path
    (lpm_dir / 'metadata.json').write_text(json.dumps(meta))
    with pytest.raises(search.SearchError, match='lpm_dir_sha256'):
        search.prepare_run_dir(str(tmp_path / 'run'), config)


def test_a_search_failing_before_its_first_step_leaves_no_run_directory(tmp_path, repo_root):
    lpm_dir = tmp_path / 'lpm'
    shutil.copytree(os.path.join(repo_root, 'ladnas_tf', 'predictors', 'cpu_tflite_cifar'), lpm_dir)
    (lpm_dir / 'lpm.keras').write_bytes(b'damaged')
    with pytest.raises(search.SearchError, match='not a readable Keras model'):
        search.search(_config(lambda_=0.1, lpm_dir=str(lpm_dir)), str(tmp_path / 'run'), data=tiny_data(),
                      progress=False, log=lambda line: None)
    assert not (tmp_path / 'run').exists()  # the corrected command is not refused for a stale directory


@pytest.mark.slow
def test_a_finished_run_is_re_reported_on_as_many_batches_as_asked(finished):
    model_dir, summary, _ = finished
    again = search.search(_config(final_eval_batches=1), model_dir, data=tiny_data(), progress=False,
                          log=lambda line: None)
    assert again['supernet_valid_images'] == 8 and again['genotype'] == summary['genotype']
    with pytest.raises(search.SearchError, match='final_eval_batches must be positive'):
        _config(final_eval_batches=0).check()


@pytest.mark.slow
def test_run_directories_are_never_overwritten_silently(finished, tmp_path):
    model_dir = finished[0]
    with pytest.raises(search.SearchError, match=r'other settings \(channels: 4 -> 6\)'):
        search.search(_config(channels=6), model_dir, data=tiny_data(), progress=False)
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'notes.txt').write_text('mine')
    with pytest.raises(search.SearchError, match='not empty'):
        search.prepare_run_dir(str(other), _config())
    assert (other / 'notes.txt').read_text() == 'mine'
    (other / 'summary.json').write_text('{}')
    assert search.prepare_run_dir(str(other), _config(), overwrite=True) is False
    assert sorted(os.listdir(other)) == [search.CONFIG_FILE, 'notes.txt']  # only our outputs replaced


@pytest.mark.slow
def test_a_checkpoint_of_another_configuration_is_refused(finished, tmp_path):
    model_dir = str(tmp_path / 'mixed')
    search.prepare_run_dir(model_dir, _config(layers=4))
    shutil.copytree(os.path.join(finished[0], 'checkpoints'), os.path.join(model_dir, 'checkpoints'))
    with pytest.raises(search.SearchError, match='another configuration') as error:
        search.search(_config(layers=4), model_dir, data=tiny_data(), progress=False)
    assert '\n' not in str(error.value)


def test_bad_settings_are_one_line_errors():
    for bad, match in ((dict(method='enas'), 'unknown method'), (dict(channels=0), 'channels'),
                       (dict(method='pcdarts', channels=6, partial_channels=4), 'partial_channels'),
                       (dict(order='second', recompute=True), 'first-order search only')):
        with pytest.raises(search.SearchError, match=match):
            _config(**bad).check()
    with pytest.raises(architect.SearchConfigError, match='unknown order'):
        _config(order='third')
    unknown = _config(lpm_dir='no_such_predictor')  # a config holds the name as given, reading nothing
    assert unknown.lpm_dir == 'no_such_predictor'
    with pytest.raises(search.SearchError, match='unknown predictor'):
        unknown.check()
    with pytest.raises(search.SearchError, match='larger than'):
        tiny_data(batch_size=64)


def _checkpoint_arrays(model_dir):
    import tensorflow as tf
    reader = tf.train.load_checkpoint(os.path.join(model_dir, 'checkpoints'))
    names = sorted(n for n in reader.get_variable_to_shape_map() if n.startswith(('model/', 'model_weights/')))
    return {n: reader.get_tensor(n) for n in names}


DRIVER = DATA_SNIPPET + textwrap.dedent('''
    import json, sys
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    from ladnas_tf import run_dir
    config = search.SearchConfig.from_json(json.loads(sys.argv[2]))
    summary = search.search(config, sys.argv[1], data=tiny_data(), progress=False, checkpoint_every=1e-9,
                            step_callback=run_dir.step_callback_from_env())
    print(json.dumps(summary))
''')


def _driver(run_tool, model_dir, config, kill_at_step=None):
    kill = {} if kill_at_step is None else {run_dir.KILL_AT_STEP_ENV: str(kill_at_step)}
    return run_tool('-c', DRIVER, model_dir, json.dumps(config), env={'TF_CPP_MIN_LOG_LEVEL': '2', **kill},
                    without=() if kill else (run_dir.KILL_AT_STEP_ENV,), timeout=900)


@pytest.mark.slow
def test_killed_and_resumed_ends_as_an_uninterrupted_run(run_tool, tmp_path):
    """A real SIGKILL at step 5 (inside the second epoch, after its checkpoint), then the same command again."""
    config = {**TINY, 'epochs': 3, 'method': 'pcdarts', 'partial_channels': 2, 'warmup_epochs': 1}
    straight = _driver(run_tool, str(tmp_path / 'straight'), config)
    assert straight.returncode == 0, straight.stderr[-2000:]
    expected = json.loads(straight.stdout.strip().splitlines()[-1])

    killed_dir = str(tmp_path / 'killed')
    victim = _driver(run_tool, killed_dir, config, kill_at_step=5)
    assert victim.returncode == -9, victim.stderr[-2000:]
    assert 'ckpt-5' in open(os.path.join(killed_dir, 'checkpoints', 'checkpoint')).read()
    resumed = _driver(run_tool, killed_dir, config)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    out = resumed.stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result['genotype'] == expected['genotype']
    assert result['steps'] == expected['steps'] == 9
    np.testing.assert_allclose(result['softmax_alpha_normal'], expected['softmax_alpha_normal'], atol=1e-4)
    np.testing.assert_allclose(result['softmax_alpha_reduce'], expected['softmax_alpha_reduce'], atol=1e-4)
    straight_weights, resumed_weights = (_checkpoint_arrays(str(tmp_path / d)) for d in ('straight', 'killed'))
    assert straight_weights.keys() == resumed_weights.keys() and len(straight_weights) > 80
    for name, value in straight_weights.items():  # the cells' weights and BN statistics too
        np.testing.assert_allclose(resumed_weights[name], value, atol=1e-4, err_msg=name)


def test_the_checkpoint_holds_every_weight(tmp_path):
    import tensorflow as tf
    run = search.Search(_config(), tiny_data())
    path = run.checkpoint.save(str(tmp_path / 'ckpt'))
    saved = [n for n in tf.train.load_checkpoint(path).get_variable_to_shape_map()
             if n.startswith(('model/', 'model_weights/'))]
    assert len(saved) == len(run.model.weights) > 80  # 91: kernels, BN statistics (one vector per mixed op), alpha


REPLICAS = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ladnas_tf import architect, supernet
    order = sys.argv[1]
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(8, 8, 8, 3)).astype(np.float32), rng.integers(0, 3, 8).astype(np.int32))
               for _ in range(4)]
    results = {}
    for name, strategy in (('one', tf.distribute.get_strategy()),
                           ('two', tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))):
        with strategy.scope():
            model = supernet.build_supernet(4, 3, 3, 8, partial_channels=2, edge_normalization=True, seed=3)
            searcher = architect.Architect(model, architect.ArchitectConfig(order=order), 4, 2, strategy=strategy)
        dist = lambda b: next(iter(strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensors(b))))
        for i in range(2):
            logs = searcher.step(dist(batches[2 * i]), dist(batches[2 * i + 1]))
        replicas = [[v.numpy() for v in var.value.values] if hasattr(var.value, 'values') else [var.numpy()]
                    for var in model.arch_parameters()]
        results[name] = {'alpha': [r[0].tolist() for r in replicas], 'loss': logs['loss'],
                         'same_on_replicas': all(np.array_equal(r[0], x) for r in replicas for x in r),
                         'weights': [w.numpy().ravel()[:20].tolist() for w in model.weight_parameters()[:5]]}
    print(json.dumps(results))
''')


@pytest.mark.slow
@pytest.mark.parametrize('order', ['first'])  # 'second' passes too, but takes ~6 minutes on one core
def test_two_replicas_follow_one_on_the_same_global_batch(order, run_tool):
    out = run_tool('-c', REPLICAS, order, env={'TF_CPP_MIN_LOG_LEVEL': '2'}, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    one, two = results['one'], results['two']
    assert two['same_on_replicas']
    assert two['loss'] == pytest.approx(one['loss'], rel=1e-4)
    for a, b in zip(one['alpha'], two['alpha']):
        np.testing.assert_allclose(b, a, atol=2e-6)
    for a, b in zip(one['weights'], two['weights']):
        np.testing.assert_allclose(b, a, atol=2e-5)


# ---- the latency-aware objective (paper Eq. 3) and the FLOPs baseline in the loop ----

SHIPPED_LPM = 'cpu_tflite_cifar'  # a name: SearchConfig and lpm.registry.load take it


@pytest.fixture(scope='module')
def searcher_model():
    from ladnas_tf import supernet
    return supernet.build_supernet(4, 3, 3, 8, seed=0)


@pytest.fixture(scope='module')
def latency_run(tmp_path_factory):
    """The plain tiny search again with the shipped LPM at lambda_ = 0: LAT(alpha) estimated and logged."""
    model_dir = str(tmp_path_factory.mktemp('lat') / 'search')
    summary = search.search(_config(lpm_dir=SHIPPED_LPM), model_dir, data=tiny_data(), progress=False,
                            measure_latency=False, log=lambda line: None)
    return model_dir, summary


@pytest.mark.slow
def test_a_search_loads_its_predictor_once(tmp_path, monkeypatch):
    from ladnas_tf.lpm import model as lpm_lib
    loads, load = [], lpm_lib.LPM.load.__func__
    monkeypatch.setattr(lpm_lib.LPM, 'load', classmethod(lambda cls, *a, **k: loads.append(a) or load(cls, *a, **k)))
    search.search(_config(lpm_dir=SHIPPED_LPM, epochs=1, max_steps_per_epoch=1), str(tmp_path / 'run'),
                  data=tiny_data(), progress=False, measure_latency=False, log=lambda line: None)
    assert loads == [(registry.resolve(SHIPPED_LPM),)]


@pytest.mark.slow
def test_lambda_zero_is_the_plain_search_bit_for_bit(finished, latency_run):
    plain, latency = _checkpoint_arrays(finished[0]), _checkpoint_arrays(latency_run[0])
    assert plain.keys() == latency.keys() and any('alpha' in n for n in plain)
    for name in plain:
        np.testing.assert_array_equal(plain[name], latency[name], err_msg=name)
    assert latency_run[1]['genotype'] == finished[1]['genotype']


@pytest.mark.slow
def test_latency_run_logs_and_reports_the_latency(latency_run):
    import tensorflow as tf
    model_dir, summary = latency_run
    tags = set()
    for name in os.listdir(os.path.join(model_dir, 'tensorboard')):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(model_dir, 'tensorboard', name)):
            tags.update(v.tag for v in event.summary.value)
    assert {'arch/latency', 'arch/lat_alpha_ms', 'arch/lambda'} <= tags
    lat = summary['latency']
    assert lat['target'] == 'cpu_tflite' and lat['setting'] == 'cifar-C36-N20-32px-b1-k10'
    assert lat['lambda_'] == 0.0 and 5 < lat['predicted_ms'] < 100 and 5 < lat['lat_alpha_ms'] < 100
    assert 5 < lat['unit_ms'] < 100  # the LPM's DARTS_V2, the unit of lambda_
    assert 'measured_ms' not in lat


def test_report_times_the_derived_network_on_the_target():
    from ladnas_tf import genotypes, objective
    from ladnas_tf.graph.setting import Setting
    goal = objective.Objective(lambda_=0.1, predictor=registry.load(SHIPPED_LPM))
    goal.setting = Setting('cifar', 4, 3, 8, 1, 10)  # a tiny evaluation network: quick to convert
    report = search.latency_report(goal, genotypes.DARTS_V2, log=lambda line: None)
    assert report['measured_ms'] > 0 and report['reference_ms'] > 0 and report['params'] > 0
    assert report['measured_vs_reference'] == pytest.approx(report['measured_ms'] / report['reference_ms'])
    assert report['macs'] > 0 and report['lambda_'] == pytest.approx(0.1)
    from ladnas_tf.profiling import agent
    assert report['measured_on'] == f'{agent.cpu_model()} [cpu_tflite, float32, 1 thread]'  # this machine
    assert report['predicted_on'] == 'AMD EPYC [cpu_tflite, float32, 1 thread]'  # the predictor's, from its metadata
    text = objective.comparison_text(report)
    assert f"measured {report['measured_vs_reference']:.2f}x DARTS_V2 on {report['measured_on']}" in text
    assert f"predicted {report['predicted_vs_reference']:.2f}x DARTS_V2 on {report['predicted_on']}" in text


def test_flops_baseline_is_one_more_term_of_the_same_loss(searcher_model):
    from ladnas_tf import objective
    from ladnas_tf.cost import flops
    goal = _config(eta=1e-3).objective()
    assert goal.latency is None and goal.lpm is None and list(goal.arch_loss.terms) == ['flops']
    tables = flops.macs_table(36, 32, 20)
    unit = flops.genotype_macs(objective.REFERENCE, tables)  # DARTS_V2's cell ops: 8 + 8 of the 14 + 14 edges
    assert 0 < unit < float(np.sum(tables[0].max(-1)) + np.sum(tables[1].max(-1)))
    expected = 1e-3 * flops.flops(searcher_model.alpha_normal, searcher_model.alpha_reduce, tables) / unit
    assert float(goal.arch_loss.terms['flops'](searcher_model)) == pytest.approx(float(expected))
    assert goal.scalars() == {} and goal.variables() == {}
    assert goal.report(None) == {'setting': 'cifar-C36-N20-32px-b1-k10', 'eta': 1e-3,
                                 'unit_mmacs': unit, 'target': 'cpu_tflite'}
    assert objective.Objective().arch_loss.terms == {}  # no LPM, no eta: the plain DARTS loss


def test_latency_settings_that_cannot_work_are_refused(tmp_path):
    for bad, match in ((dict(lambda_=0.1, eta=0.1, lpm_dir=SHIPPED_LPM), 'cannot be active together'),
                       (dict(lambda_=0.1), 'needs an LPM'), (dict(lambda_=-1.0), 'negative'),
                       (dict(lat_samples=0, lpm_dir=SHIPPED_LPM), 'at least 1'),
                       (dict(target_latency_ms=0.0, lpm_dir=SHIPPED_LPM), 'positive')):
        with pytest.raises(search.SearchError, match=match):
            _config(**bad).check()
    other = tmp_path / 'lpm'
    shutil.copytree(registry.resolve(SHIPPED_LPM), other)
    meta_path = other / 'metadata.json'
    meta = json.loads(meta_path.read_text())
    meta['signature']['primitives'] = meta['signature']['primitives'][:-1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(search.SearchError, match='another search space') as error:
        search.search(_config(lambda_=0.1, lpm_dir=str(other)), str(tmp_path / 'run'), data=tiny_data(),
                      progress=False)
    assert '\n' not in str(error.value)


def _cli(run_tool, *args):
    return run_tool('search', *args, env={'TF_CPP_MIN_LOG_LEVEL': '3'}, timeout=300)


@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_keeps_what_exists(run_tool, tmp_path):
    """Unknown flag values, an unreadable dataset and another search's directory: one line each on
    stderr, a non-zero exit, and the directory untouched."""
    out = _cli(run_tool, '--method=enas')
    assert out.returncode != 0 and 'enas' in out.stderr
    out = _cli(run_tool, f'--dataset={tmp_path / "missing"}', f'--model_dir={tmp_path / "run"}')
    assert out.returncode == 1 and out.stderr.strip().startswith('error:')
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / 'run').exists()
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'notes.txt').write_text('keep')
    out = _cli(run_tool, '--lambda_=0', f'--model_dir={mine}')
    assert out.returncode == 1 and 'not empty' in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert os.listdir(mine) == ['notes.txt']
    out = _cli(run_tool, '--eta=0.001', f'--model_dir={tmp_path / "both"}')  # --lambda_ defaults to 0.1
    assert out.returncode == 1 and 'cannot be active together' in out.stderr


# ---- the deployment's numeric format: the predictor must have learnt the deployed file's latency ----

@pytest.fixture(scope='module')
def int8_lpm(predictors, tmp_path_factory):
    """A tiny predictor of int8 latency (untrained; an int8 target description)."""
    return predictors.save(tmp_path_factory.mktemp('int8') / 'int8_lpm', cells='both', target='cpu_tflite_int8',
                           device='Int8 CPU')


@pytest.fixture(scope='module')
def float32_lpm(predictors, tmp_path_factory):
    return predictors.save(tmp_path_factory.mktemp('float32') / 'float32_lpm', cells='both')


def test_an_int8_deployment_with_the_default_predictor_reads_the_int8_one(monkeypatch):
    config = _config(lambda_=0.1, lpm_dir=search.DEFAULT_LPM, deploy_format='int8')
    assert config.predictor_name() == 'cpu_tflite_int8_cifar' and config.lpm_dir == search.DEFAULT_LPM
    assert _config(lambda_=0.1, lpm_dir=search.DEFAULT_LPM, deploy_format='float32').predictor_name() == \
        search.DEFAULT_LPM
    monkeypatch.setitem(search.DEFAULT_LPMS, 'int8', 'int8_not_installed')  # until the int8 one ships
    with pytest.raises(search.SearchError, match='int8_not_installed is not installed here') as error:
        config.check()
    assert '\n' not in str(error.value) and '--lpm' in str(error.value)


def test_a_predictor_of_another_numeric_format_is_refused_unless_forced(float32_lpm, int8_lpm, tmp_path):
    config = _config(lambda_=0.1, lpm_dir=float32_lpm, deploy_format='int8')
    with pytest.raises(search.SearchError, match='predicts float32 latency, the deployment is int8') as error:
        search.search(config, str(tmp_path / 'run'), data=tiny_data(), progress=False)
    assert '\n' not in str(error.value) and '--force_format' in str(error.value)
    assert not (tmp_path / 'run').exists()  # nothing written
    predictor, _ = _config(lambda_=0.1, lpm_dir=float32_lpm, deploy_format='int8', force_format=True).load_predictors()
    assert predictor.metadata['target'] == 'cpu_tflite'
    with pytest.raises(search.SearchError, match='predicts int8 latency, the deployment is float32'):
        _config(lambda_=0.1, lpm_dir=int8_lpm, deploy_format='float32').load_predictors()


def test_an_int8_predictor_times_the_derived_network_as_int8(int8_lpm):
    from ladnas_tf import genotypes, objective
    from ladnas_tf.graph.setting import Setting
    config = _config(lambda_=0.1, lpm_dir=int8_lpm)  # the deployment follows the predictor
    goal = config.objective()
    assert goal.target_description()['target'] == 'cpu_tflite_int8'
    goal.setting = Setting('cifar', 4, 3, 8, 1, 10)  # a tiny evaluation network: quick to write and time
    report = search.latency_report(goal, genotypes.PDARTS, log=lambda line: None)
    assert report['target'] == 'cpu_tflite_int8'
    assert report['predicted_on'] == 'Int8 CPU [cpu_tflite_int8, int8, 1 thread]'
    assert report['measured_on'].endswith('[cpu_tflite_int8, int8, 1 thread]') and report['measured_ms'] > 0
    assert 'predicted' in objective.comparison_text(report) and 'measured' in objective.comparison_text(report)


def test_the_flops_baseline_of_an_int8_deployment_is_timed_as_int8():
    assert _config(eta=1e-3, deploy_format='int8').objective().target_description() == {'target': 'cpu_tflite_int8'}


def test_the_run_directory_records_the_predictors_directory_and_content(int8_lpm):
    settings = search.run_settings(_config(lambda_=0.1, lpm_dir=SHIPPED_LPM))
    assert settings['lpm_dir'] == registry.resolve(SHIPPED_LPM) and len(settings['lpm_dir_sha256']) == 64
    assert search.run_settings(_config(lpm_dir=''))['lpm_dir'] is None
    assert search.run_settings(_config(lpm_dir=int8_lpm, deploy_format='int8'))['deploy_format'] == 'int8'


SEARCH_CLI = ['--epochs=1', '--max_steps_per_epoch=2', '--final_eval_batches=1', '--channels=4', '--layers=2',
              '--image_size=8', '--batch_size=16', '--nomeasure_latency', '--noprogress', '--seed=3']


def _without_durations(summary):
    return {k: v for k, v in summary.items() if k != 'seconds'}


@pytest.mark.slow
def test_the_cli_output_is_the_same_on_a_fixed_seed(run_tool, tmp_path):
    """Twice the same command (other directories): the same screen, summary and files, durations aside."""
    outs = [_cli(run_tool, *SEARCH_CLI, f'--model_dir={tmp_path / name}') for name in ('a', 'b')]
    for out in outs:
        assert out.returncode == 0, out.stderr[-3000:]
    screens = [re.sub(r'\d+ s$', 'N s', out.stdout.replace(str(tmp_path / name), 'DIR'), flags=re.M)
               for out, name in zip(outs, ('a', 'b'))]
    assert screens[0] == screens[1] and 'x DARTS_V2 on' in screens[0]
    a, b = (json.loads((tmp_path / name / 'summary.json').read_text()) for name in ('a', 'b'))
    assert _without_durations(a) == _without_durations(b)
    for name in ('genotype.json', search.CONFIG_FILE, 'cells/normal.dot'):
        assert (tmp_path / 'a' / name).read_bytes() == (tmp_path / 'b' / name).read_bytes(), name
