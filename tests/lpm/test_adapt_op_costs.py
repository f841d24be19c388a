"""op_costs: a new device whose kernels cost differently, recovered from a few of its timings."""
import numpy as np
import pytest
import tensorflow as tf

from ladnas_tf import search_space
from ladnas_tf.lpm import adapt, dataset, model as lpm

from conftest import save_predictor


def _counts(genotype):
    """How often each operation occurs in each cell, from the genotype's (op, input) pairs."""
    counts = np.zeros((2, search_space.NUM_OPS))
    for c, cell in enumerate((genotype.normal, genotype.reduce)):
        for op, _ in cell:
            counts[c, search_space.PRIMITIVES.index(op)] += 1
    return counts.reshape(-1)


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    """A saved, reloaded predictor (log scaling, as the shipped bases)."""
    return lpm.LPM.load(save_predictor(str(tmp_path_factory.mktemp('base') / 'lpm'), cells='both', seed=3))


def test_the_op_count_matrix_counts_each_operation_per_cell():
    rng = np.random.default_rng(0)
    for genotype in [search_space.sample_genotype(rng) for _ in range(20)]:
        bits = dataset.genotype_encoding(genotype, 'both')
        np.testing.assert_array_equal(bits @ lpm.op_count_matrix('both'), _counts(genotype))


def test_op_costs_recovers_per_operation_factors_of_a_new_device(base, tmp_path):
    rng = np.random.default_rng(1)
    factors = np.exp(rng.normal(0, 0.05, 16))  # this device's cost of each operation, relative to the base's
    seen = [search_space.sample_genotype(rng) for _ in range(200)]
    x = np.stack([dataset.genotype_encoding(g, 'both') for g in seen])
    y = 0.5 * base.predict_ms(x) * np.prod(factors ** np.stack([_counts(g) for g in seen]), axis=1)
    adapted = adapt.fit('op_costs', base, x, y, {'kind': 'latency'})
    unseen = [search_space.sample_genotype(rng) for _ in range(50)]
    xu = np.stack([dataset.genotype_encoding(g, 'both') for g in unseen])
    truth = 0.5 * base.predict_ms(xu) * np.prod(factors ** np.stack([_counts(g) for g in unseen]), axis=1)
    np.testing.assert_allclose(adapted.predict_ms(xu), truth, rtol=0.02)  # the L2 prior shrinks a little
    adapted.metadata = {**adapted.metadata, 'data': {}}
    adapted.save(str(tmp_path / 'lpm'))
    loaded = lpm.LPM.load(str(tmp_path / 'lpm'))
    np.testing.assert_allclose(loaded.predict_ms(xu), adapted.predict_ms(xu), rtol=1e-5)
    relaxed = tf.Variable(np.full((1, 224), 1 / 8, np.float32))
    with tf.GradientTape() as tape:
        out = loaded(relaxed)
    assert np.all(np.isfinite(tape.gradient(out, relaxed).numpy()))
