"""op_costs: a new device whose kernels cost differently, recovered from a few of its timings."""
import numpy as np
import pytest
import tensorflow as tf

from ladnas_tf import search_space
from ladnas_tf.lpm import adapt, dataset, metrics, model as lpm

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


def _device(base, x, counts, factors, slope):
    """A device whose latency spreads as base ** slope and whose operations cost `factors` times more."""
    return 0.5 * base.predict_ms(x) ** slope * np.prod(factors ** counts, axis=1)


def test_affine_op_costs_recovers_a_steeper_device_and_op_costs_cannot(base):
    rng = np.random.default_rng(2)
    factors = np.exp(rng.normal(0, 0.05, 16))
    seen, unseen = ([search_space.sample_genotype(rng) for _ in range(k)] for k in (200, 100))
    x, xu = (np.stack([dataset.genotype_encoding(g, 'both') for g in gs]) for gs in (seen, unseen))
    counts, counts_u = (np.stack([_counts(g) for g in gs]) for gs in (seen, unseen))
    y, truth = _device(base, x, counts, factors, 1.4), _device(base, xu, counts_u, factors, 1.4)
    affine = adapt.fit('affine_op_costs', base, x, y, {'kind': 'latency'}).predict_ms(xu)
    fixed = adapt.fit('op_costs', base, x, y, {'kind': 'latency'}).predict_ms(xu)
    np.testing.assert_allclose(affine, truth, rtol=0.02)
    assert metrics.regression_metrics(truth, affine)['kendall_tau'] > 0.95
    assert np.mean(np.abs(np.log(affine / truth))) < np.mean(np.abs(np.log(fixed / truth))) / 3


def test_cross_validation_picks_the_penalty_the_rows_call_for():
    rng = np.random.default_rng(4)
    counts = rng.multinomial(8, np.full(8, 1 / 8), size=40).astype(float)
    log_base = rng.normal(3, 0.1, 40)
    noise = rng.normal(0, 0.05, 40)
    # no per-op effect, only noise: the strongest pull toward none; a strong effect, little noise: the weakest
    assert adapt.cv_op_cost_l2(log_base, counts, log_base + noise, False) >= 30
    effect = counts @ rng.normal(0, 0.2, 8)
    assert adapt.cv_op_cost_l2(log_base, counts, log_base + effect + 0.01 * noise, False) == adapt.OP_COST_L2[0]


def test_a_row_timed_under_load_does_not_drag_the_huber_fit():
    rng = np.random.default_rng(5)
    f = rng.normal(0, 1, (30, 3))
    y = f @ np.array([0.1, -0.2, 0.3]) + rng.normal(0, 0.01, 30)
    y[0] += 1.0  # one row timed at 2.7x load
    robust, _ = adapt.huber_ridge(f, y, 1e-6)
    squares, _ = lpm.ridge(f, y, 1e-6)
    np.testing.assert_allclose(robust, [0.1, -0.2, 0.3], atol=0.01)
    assert np.max(np.abs(squares - [0.1, -0.2, 0.3])) > 0.02


def test_ridge_row_weights_of_zero_drop_the_row():
    rng = np.random.default_rng(6)
    f, y = rng.normal(0, 1, (12, 4)), rng.normal(0, 1, 12)
    weights = np.r_[0.0, np.ones(11)]
    for got, want in zip(lpm.ridge(f, y, [0.0, 1.0, 2.0, 3.0], weights), lpm.ridge(f[1:], y[1:], [0.0, 1.0, 2.0, 3.0])):
        np.testing.assert_allclose(got, want, atol=1e-10)
