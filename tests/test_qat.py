"""QAT: the tf_keras rebuild computes the Keras network's logits; a trained run becomes an int8 TFLite
file by tools.qat, with its interpreter accuracy in the run's summary; bad input is one line."""
import json
import os

import numpy as np
import pytest

from ladnas_tf import data, export, genotypes, network, qat, search_space, train
from ladnas_tf.graph import convert

TINY = dict(channels=4, num_cells=3, num_classes=10)
RECIPE = train.Recipe(channels=4, layers=3, image_size=16, epochs=2, batch_size=64, learning_rate=0.1,
                      auxiliary=False, drop_path_prob=0.0, cutout=0, augment=None, weight_decay=0.0)


def _trained_looking(model, seed=0):
    """BN statistics and offsets as a trained network has them (the initial ones are trivial)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        name = w.path.rsplit('/', 1)[-1]
        if name in ('beta', 'moving_mean'):
            w.assign(rng.normal(0, 0.3, w.shape))
        elif name in ('gamma', 'moving_variance'):
            w.assign(rng.uniform(0.5, 2.0, w.shape))
    return model


@pytest.mark.parametrize('genotype,setting,image_size,auxiliary', [
    (genotypes.DARTS_V2, 'cifar', 16, False),
    # a random genotype, with an auxiliary head that the rebuild must leave out
    (search_space.sample_genotype(np.random.default_rng(3)), 'cifar', 32, True),
    (genotypes.PC_DARTS, 'imagenet', 32, False)])
def test_rebuild_gives_the_keras_logits(genotype, setting, image_size, auxiliary):
    model = _trained_looking(network.build_network(genotype, setting, **TINY, auxiliary=auxiliary,
                                                   image_size=image_size, seed=0))
    rebuilt = qat.rebuild(model)
    assert type(rebuilt).__module__.startswith('tf_keras')
    assert qat.parity(model, rebuilt, convert.random_images(3, image_size)) < 1e-5
    # inference only: the rebuild carries exactly the Keras weights without the auxiliary head
    assert rebuilt.count_params() == model.count_eval_params() + sum(
        int(np.prod(w.shape)) for w in model.non_trainable_weights
        if 'moving' in w.path and 'auxiliary' not in w.path)


def test_a_network_of_another_genotype_is_refused_in_one_line():
    model = network.build_network(genotypes.DARTS_V2, 'cifar', **TINY, image_size=8)
    model.genotype = genotypes.PC_DARTS  # the weights of one genotype, the walk of another
    with pytest.raises(qat.QATError, match='does not match|do not describe') as e:
        qat.rebuild(model)
    assert '\n' not in str(e.value)


def test_wrong_shaped_representative_images_are_one_line():
    with pytest.raises(qat.QATError, match=r'N x 16 x 16 x 3.*got shape \(8, 16, 16\)'):
        qat.check_representative(np.zeros((8, 16, 16)), 16)


def test_dataset_of_another_image_size_is_one_line():
    model = network.build_network(genotypes.DARTS_V2, 'cifar', **TINY, image_size=16)
    wrong = data.load('digits', 'train', image_size=8)
    with pytest.raises(qat.QATError, match='8x8, the network takes 16x16'):
        qat.check_inputs(model, wrong, wrong, RECIPE, 1, 0.01)
    with pytest.raises(qat.QATError, match='at least one epoch'):
        qat.check_inputs(model, wrong, wrong, RECIPE, 0, 0.01)


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """A finished tools.train run: DARTS_V2, C=4, 3 cells, 16x16 digits, 2 epochs."""
    path = str(tmp_path_factory.mktemp('qat') / 'run')
    train.train(genotypes.DARTS_V2, RECIPE, path, 'digits', verbose=0, log=lambda *_: None)
    return path


def _qat_cli(run_tool, run_dir, *flags):
    return run_tool('qat', f'--model_dir={run_dir}', *flags, timeout=900)


@pytest.mark.slow
def test_qat_cli_writes_an_int8_file_and_its_accuracy(run_tool, run_dir):
    with open(os.path.join(run_dir, train.SUMMARY)) as f:
        before = json.load(f)
    result = _qat_cli(run_tool, run_dir, '--epochs=1', '--latency_runs=3', '--calibration_images=32')
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(run_dir, train.SUMMARY)) as f:
        after = json.load(f)
    assert {k: after[k] for k in before} == before  # nothing lost
    entry = after['qat']
    with open(os.path.join(run_dir, entry['file']), 'rb') as f:
        tflite_bytes = f.read()
    assert entry['file_bytes'] == len(tflite_bytes) and entry['epochs'] == 1
    types = export.tflite_tensor_types(tflite_bytes)
    assert types['INT8'] > 10 * types['FLOAT32']  # int8 throughout, float only at the ends
    assert entry['rebuild_parity'] < 1e-4 and entry['cpu_latency']['latency_ms'] > 0
    # The interpreter's accuracy is measured, and agrees with the fake-quantized Keras model's.
    test_set = data.load('digits', 'test', image_size=16)
    assert entry['test_top1'] == pytest.approx(train.tflite_accuracy(tflite_bytes, test_set))
    assert abs(entry['test_top1'] - entry['qat_keras_test_top1']) <= 5
    assert entry['test_top1'] > 30  # well above chance (10%): the trained weights came across

    again = _qat_cli(run_tool, run_dir, '--epochs=1')
    assert again.returncode == 1 and 'pass --overwrite' in again.stderr
    assert again.stderr.strip().count('\n') == 0


@pytest.mark.slow
def test_qat_cli_on_a_directory_without_a_run_is_one_line(run_tool, tmp_path):
    result = _qat_cli(run_tool, tmp_path)
    assert result.returncode == 1 and 'run_config.json does not exist' in result.stderr
    assert result.stderr.strip().count('\n') == 0
