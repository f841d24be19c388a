"""The profiler's constant graph is the Keras network: same TFLite ops, parameters and MACs."""
import numpy as np
import pytest

from ladnas_tf import export, genotypes, network, search_space
from ladnas_tf.graph import constant, convert

CIFAR = dict(channels=4, num_cells=3, image_size=16, num_classes=10)
IMAGENET = dict(channels=8, num_cells=3, image_size=64, num_classes=20)
# random0 feeds two dil_conv_3x3 from one input: the converter shares their SPACE_TO_BATCH_ND.
CASES = [('DARTS_V2', genotypes.DARTS_V2, 'cifar', CIFAR), ('PC_DARTS', genotypes.PC_DARTS, 'cifar', CIFAR),
         ('random0', search_space.sample_genotype(np.random.default_rng(0)), 'cifar', CIFAR),
         ('DARTS_V2', genotypes.DARTS_V2, 'imagenet', IMAGENET)]


@pytest.mark.parametrize('name,genotype,setting,kwargs', CASES)
def test_timed_model_has_the_ops_of_the_keras_export(name, genotype, setting, kwargs):
    model = network.build_network(genotype, setting, **kwargs)
    # A trained network's BN offsets are not zero: with the initial zeros the converter drops the
    # `+ 0` after a BN it cannot fold, an ADD that no deployed model would lose.
    rng = np.random.default_rng(0)
    for w in model.weights:
        if w.path.endswith(('beta', 'moving_mean')):
            w.assign(rng.normal(0, 0.1, w.shape))
    keras_ops = export.tflite_op_counts(convert.keras_to_tflite(model, kwargs['image_size']))
    fast, params, macs = constant.genotype_to_tflite(genotype, setting=setting, **kwargs)
    assert export.tflite_op_counts(fast) == keras_ops
    assert params == model.count_eval_params()
    assert macs == model.count_macs()
