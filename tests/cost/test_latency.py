"""LAT(alpha) by sampling, its straight-through gradient, and the FLOPs-aware term."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from ladnas_tf import genotypes, network, search_space
from ladnas_tf.cost import errors, flops, latency
from ladnas_tf.lpm import dataset


@pytest.fixture(scope='module')
def alpha():
    return tf.Variable(np.random.default_rng(0).normal(0, 1, (14, 8)), dtype=tf.float64)


@pytest.fixture(scope='module')
def alpha_reduce():
    return tf.Variable(np.random.default_rng(1).normal(0, 1.5, (14, 8)), dtype=tf.float64)


def _finite_differences(exact, arrays, eps=1e-5):
    """Central differences of exact(*arrays) with respect to every entry of every array."""
    grads = []
    for k, a0 in enumerate(arrays):
        fd = np.zeros_like(a0)
        for idx in np.ndindex(*a0.shape):
            up, down = [a.copy() for a in arrays], [a.copy() for a in arrays]
            up[k][idx] += eps
            down[k][idx] -= eps
            fd[idx] = (exact(*up) - exact(*down)) / (2 * eps)
        grads.append(fd)
    return grads


def _agrees(grad, fd):
    big = np.abs(fd) > 0.05 * np.abs(fd).max()
    signs = (np.sign(grad[big]) == np.sign(fd[big])).mean()
    return signs > 0.95 and np.corrcoef(grad.ravel(), fd.ravel())[0, 1] > 0.95


def test_samples_are_valid_sub_networks(alpha):
    enc = latency.sample_encodings(alpha, 200, [1, 2]).numpy()
    for row in enc:
        cell = search_space.decode_cell(row)  # raises on anything but a valid discrete cell
        assert 'none' not in [op for op, _ in cell]


def test_sampling_distribution_matches_alpha(alpha):
    m = 20000
    enc = latency.sample_encodings(alpha, m, [3, 4]).numpy().reshape(m, 14, 8)
    kept = enc.sum(-1).mean(0)
    expected_keep = [2 / j for _, j in search_space.EDGES]
    np.testing.assert_allclose(kept, expected_keep, atol=0.02)
    op_freq = enc.sum(0)[:, 1:] / enc.sum((0, 2))[:, None]
    np.testing.assert_allclose(op_freq, latency.op_probabilities(alpha).numpy(), atol=0.03)


def test_samples_are_seeded(alpha):
    a = latency.sample_encodings(alpha, 5, [7, 7])
    assert np.array_equal(a, latency.sample_encodings(alpha, 5, [7, 7]))
    assert not np.array_equal(a, latency.sample_encodings(alpha, 5, [7, 8]))


def test_gradient_agrees_with_finite_differences_of_the_exact_expectation(alpha):
    w = np.random.default_rng(1).uniform(0, 1, 112)
    lpm = lambda e: tf.linalg.matvec(e, tf.constant(w, e.dtype))
    with tf.GradientTape() as tape:
        estimate = latency.latency(alpha, lpm, 4000, [5, 6])
    grad = tape.gradient(estimate, alpha).numpy()
    exact = lambda a: float(latency.expected_latency_linear(tf.constant(a), w))
    fd, = _finite_differences(exact, [alpha.numpy()])
    assert float(estimate) == pytest.approx(exact(alpha.numpy()), rel=0.02)
    assert _agrees(grad, fd)
    assert np.all(grad[:, 0] == 0)  # `none` never appears in a sub-network


# ---- an LPM that reads both cells: normal from alpha_normal, reduction from alpha_reduce ----

def test_both_cell_samples_are_valid_sub_networks_in_each_half(alpha, alpha_reduce):
    enc = latency.sample_encodings([alpha, alpha_reduce], 100, [1, 2]).numpy()
    assert enc.shape == (100, 2 * search_space.ENCODING_SIZE)
    for row in enc:
        for half in (row[:112], row[112:]):
            assert half.sum() == 8
            cell = search_space.decode_cell(half)  # 2 inputs per node, one op per kept edge
            assert 'none' not in [op for op, _ in cell]


def test_both_cell_halves_follow_their_own_alpha(alpha, alpha_reduce):
    m = 20000
    enc = latency.sample_encodings([alpha, alpha_reduce], m, [3, 4]).numpy().reshape(m, 2, 14, 8)
    for half, a in ((0, alpha), (1, alpha_reduce)):
        cells = enc[:, half]
        np.testing.assert_allclose(cells.sum(-1).mean(0), [2 / j for _, j in search_space.EDGES], atol=0.02)
        op_freq = cells.sum(0)[:, 1:] / cells.sum((0, 2))[:, None]
        np.testing.assert_allclose(op_freq, latency.op_probabilities(a).numpy(), atol=0.03)
    normal_p, reduce_p = (latency.op_probabilities(a).numpy() for a in (alpha, alpha_reduce))
    assert np.abs(normal_p - reduce_p).max() > 0.2  # so the check above tells the two alphas apart
    # The cells are drawn independently: which edges the two halves keep is uncorrelated.
    kept = enc.sum(-1)
    assert abs(np.corrcoef(kept[:, 0, 2], kept[:, 1, 2])[0, 1]) < 0.05


def test_both_cell_samples_are_seeded_and_one_alpha_is_the_normal_draw(alpha, alpha_reduce):
    a = latency.sample_encodings([alpha, alpha_reduce], 5, [7, 7])
    assert np.array_equal(a, latency.sample_encodings([alpha, alpha_reduce], 5, [7, 7]))
    assert not np.array_equal(a, latency.sample_encodings([alpha, alpha_reduce], 5, [7, 8]))
    assert np.array_equal(latency.sample_encodings([alpha], 5, [7, 7]), latency.sample_encodings(alpha, 5, [7, 7]))


def test_both_cell_gradient_agrees_with_finite_differences_of_the_exact_expectation(alpha, alpha_reduce):
    w = np.random.default_rng(2).uniform(0, 1, 224)
    linear = lambda e: tf.linalg.matvec(e, tf.constant(w, e.dtype))
    with tf.GradientTape() as tape:
        estimate = latency.latency([alpha, alpha_reduce], linear, 4000, [5, 6])
    grads = [g.numpy() for g in tape.gradient(estimate, [alpha, alpha_reduce])]
    exact = lambda a_n, a_r: float(latency.expected_latency_linear([tf.constant(a_n), tf.constant(a_r)], w))
    fds = _finite_differences(exact, [alpha.numpy(), alpha_reduce.numpy()])
    assert float(estimate) == pytest.approx(exact(alpha.numpy(), alpha_reduce.numpy()), rel=0.02)
    assert np.abs(grads[1]).max() > 0  # the reduction cell is constrained too
    for grad, fd in zip(grads, fds):
        assert _agrees(grad, fd)
        assert np.all(grad[:, 0] == 0)


def test_genotype_encoding_is_the_lpm_table_layout():
    g = genotypes.DARTS_V2
    bits = lambda cell: ''.join(str(int(b)) for b in search_space.encode_cell(cell))
    row = pd.DataFrame({'normal_encoding': [bits(g.normal)], 'reduce_encoding': [bits(g.reduce)]})
    for cells in ('normal', 'both'):
        np.testing.assert_array_equal(dataset.genotype_encoding(g, cells), dataset.encodings(row, cells)[0])
    with pytest.raises(ValueError, match='unknown cells'):
        dataset.genotype_encoding(g, 'reduce')


def test_noise_is_added_only_when_asked(alpha):
    lpm = lambda e: tf.reduce_sum(e, -1)
    clean = latency.latency(alpha, lpm, 10, [1, 1])
    assert float(clean) == pytest.approx(8.0)
    additive = errors.ErrorModel(errors.Spec('additive', 0.5), 112)
    assert float(latency.latency(alpha, lpm, 10, [1, 1], additive)) != pytest.approx(8.0)


# ---- error models: what the search reads in place of the LPM ----

def _smooth_lpm(e):
    """A positive, non-linear stand-in predictor (ms) whose gradient depends on the encoding."""
    w = tf.constant(np.random.default_rng(5).uniform(0.2, 1.0, e.shape[-1]), e.dtype)
    return 5.0 + tf.square(tf.linalg.matvec(e, w))


def _value_and_gradient(alpha, error, seed=(3, 4)):
    with tf.GradientTape() as tape:
        value = latency.latency(alpha, _smooth_lpm, 50, list(seed), error)
    return float(value), tape.gradient(value, alpha).numpy()


def test_additive_noise_moves_lat_but_not_its_gradient(alpha):
    exact_value, exact_grad = _value_and_gradient(alpha, None)
    noisy_value, noisy_grad = _value_and_gradient(alpha, errors.ErrorModel(errors.Spec('additive', 1.0), 112))
    assert noisy_value != pytest.approx(exact_value)
    assert np.abs(exact_grad).max() > 0
    np.testing.assert_array_equal(noisy_grad, exact_grad)  # why the paper's Table 3 cannot matter


@pytest.mark.parametrize('spec', [errors.Spec('multiplicative', 0.2), errors.Spec('systematic', 0.2)])
def test_multiplicative_and_systematic_errors_change_the_gradient(alpha, spec):
    _, exact_grad = _value_and_gradient(alpha, None)
    _, grad = _value_and_gradient(alpha, errors.ErrorModel(spec, 112, seed=0))
    assert np.abs(grad - exact_grad).max() > 1e-3 * np.abs(exact_grad).max()  # beyond rounding
    assert np.all(grad[:, 0] == 0)  # still only through the sampled sub-networks' ops


def test_multiplicative_noise_is_fresh_per_sample_and_step_and_systematic_error_is_fixed(alpha):
    x = latency.sample_encodings(alpha, 50, [1, 2])
    mult = errors.ErrorModel(errors.Spec('multiplicative', 0.2), 112)
    ratio = (mult.per_sample(_smooth_lpm, x, [1, 2]) / _smooth_lpm(x)).numpy()
    assert 0.1 < ratio.std() < 0.3 and len(np.unique(ratio)) == 50
    assert not np.array_equal(mult.per_sample(_smooth_lpm, x, [1, 3]), mult.per_sample(_smooth_lpm, x, [1, 2]))
    sys_a, sys_b = (errors.ErrorModel(errors.Spec('systematic', 0.2), 112, seed=0) for _ in range(2))
    np.testing.assert_array_equal(sys_a.per_sample(_smooth_lpm, x, [1, 2]), sys_b.per_sample(_smooth_lpm, x, [9, 9]))
    other = errors.ErrorModel(errors.Spec('systematic', 0.2), 112, seed=1)
    assert not np.allclose(other.static(_smooth_lpm, x), sys_a.static(_smooth_lpm, x))


@pytest.mark.parametrize('mre', [0.05, 0.1, 0.2, 0.4])
def test_systematic_error_has_the_requested_mre_on_10000_random_architectures(mre):
    rng = np.random.default_rng(2026)
    codes = np.stack([np.concatenate([search_space.encode_cell(g.normal), search_space.encode_cell(g.reduce)])
                      for g in (search_space.sample_genotype(rng) for _ in range(10_000))])
    model = errors.ErrorModel(errors.Spec('systematic', mre), 224, seed=3)
    x = tf.constant(codes)
    true, perturbed = _smooth_lpm(x).numpy(), model.static(_smooth_lpm, x).numpy()
    measured = np.mean(np.abs(perturbed - true) / true)
    assert abs(measured - mre) < 0.1 * mre
    report = model.fidelity(_smooth_lpm, n=500)
    assert abs(report['mre'] - mre) < 0.15 * mre and -1 < report['kendall_tau'] < 1
    assert np.all(perturbed > 0)


def test_fidelity_orders_the_models_by_their_size():
    taus = [errors.ErrorModel(errors.Spec('systematic', m), 112).fidelity(_smooth_lpm, n=400)['kendall_tau']
            for m in (0.05, 0.4)]
    assert taus[0] > taus[1]


@pytest.mark.parametrize('kind,size,lpm_dir,match', [
    ('systematic', float('nan'), None, 'finite'), ('multiplicative', float('inf'), None, 'finite'),
    ('additive', -0.1, None, '>= 0'), ('systematic', 0.0, None, 'size > 0'), ('gaussian', 0.1, None, 'unknown'),
    ('predictor', 0.0, None, 'needs the worse LPM'), ('none', 0.2, None, 'takes no size')])
def test_bad_error_settings_are_refused_in_one_line(kind, size, lpm_dir, match):
    with pytest.raises(errors.ErrorModelError, match=match) as error:
        errors.check(kind, size, lpm_dir)
    assert '\n' not in str(error.value)


def test_error_specs_parse_from_text():
    assert errors.parse('systematic:0.1') == errors.Spec('systematic', 0.1)
    assert errors.parse('predictor:runs/lpm_n100/').name == 'predictor_lpm_n100'
    assert errors.parse('none').name == 'exact'
    with pytest.raises(errors.ErrorModelError, match='must be a number'):
        errors.parse('multiplicative:lots')


def test_flops_term_prefers_cheap_ops():
    tables = flops.macs_table(16, 32, 8)
    assert tables[0][:, 0].sum() == 0  # none is free
    assert (tables[0][:, 5] > tables[0][:, 4]).all()  # 5x5 separable costs more than 3x3
    a_n = tf.Variable(tf.zeros((14, 8), tf.float64))
    a_r = tf.Variable(tf.zeros((14, 8), tf.float64))
    with tf.GradientTape() as tape:
        f = flops.flops(a_n, a_r, tables)
    g_n, _ = tape.gradient(f, [a_n, a_r])
    assert float(f) > 0
    assert (g_n.numpy()[:, 5] > 0).all() and (g_n.numpy()[:, 0] < 0).all()


TINY_MACS = dict(channels=4, num_cells=3, image_size=8, num_classes=10)


@pytest.fixture(scope='module')
def tiny_tables():
    return flops.macs_table(TINY_MACS['channels'], TINY_MACS['image_size'], TINY_MACS['num_cells'])


@pytest.fixture(scope='module')
def shared_macs():
    """The MACs every genotype's network of this size shares (stem, the cells' preprocessing, the
    classifier): those of a network whose ops cost nothing (pools only)."""
    pools = [('max_pool_3x3', 0), ('max_pool_3x3', 1)] * 4
    return network.build_network(search_space.make_genotype(pools, pools), 'cifar', **TINY_MACS).count_macs()


@pytest.mark.parametrize('genotype', [genotypes.DARTS_V2, search_space.sample_genotype(np.random.default_rng(5)),
                                      search_space.sample_genotype(np.random.default_rng(6))])
def test_macs_table_summed_for_a_genotype_is_its_networks_op_macs(genotype, tiny_tables, shared_macs):
    op_macs = network.build_network(genotype, 'cifar', **TINY_MACS).count_macs() - shared_macs
    assert op_macs > 0 and flops.genotype_macs(genotype, tiny_tables) * 1e6 == pytest.approx(op_macs, abs=1e-6)


class _Model:
    def __init__(self):
        self.alpha_normal = tf.Variable(np.zeros((14, 8)), dtype=tf.float32)
        self.alpha_reduce = tf.Variable(np.zeros((14, 8)), dtype=tf.float32)

    def mixing_weights(self):
        return tf.nn.softmax(self.alpha_normal), None, tf.nn.softmax(self.alpha_reduce), None


def _costly_sep5(e):
    """A latency model where sep_conv_5x5 (op 5) is slow: 10 ms per such edge, 1 ms otherwise."""
    e = tf.reshape(e, (-1, 14, 8))
    return tf.reduce_sum(e[..., 5] * 10.0 + tf.reduce_sum(e, -1), -1)


def _costly_reduce_sep5(e):
    """224 bits: 1 ms per kept edge in both cells, 10 ms more per sep_conv_5x5 of the reduction cell."""
    return tf.reduce_sum(e[:, :112], -1) + _costly_sep5(e[:, 112:])


def test_a_both_cell_term_lowers_the_slow_reduction_op():
    model, term = _Model(), latency.LatencyTerm(_costly_reduce_sep5, lambda_=0.2, m=50, cells='both')
    with tf.GradientTape() as tape:
        value = term(model)
    g_n, g_r = (g.numpy() for g in tape.gradient(value, [model.alpha_normal, model.alpha_reduce]))
    assert float(value) == pytest.approx(0.2 * float(term.last_ms), rel=1e-5)
    assert (g_r[:, 5] > 0).all()  # the reduction cell moves away from its slow op
    assert np.abs(g_n).max() < 1e-6  # every normal cell costs the same: no pull on alpha_normal
    with tf.GradientTape() as tape:
        value = latency.LatencyTerm(_costly_sep5, lambda_=0.2, m=50)(model)
    assert tape.gradient(value, model.alpha_reduce) is None  # a normal-cell LPM leaves alpha_reduce alone


def test_latency_term_lowers_the_slow_ops_weight():
    model, term = _Model(), latency.LatencyTerm(_costly_sep5, lambda_=0.2, m=50)
    with tf.GradientTape() as tape:
        value = term(model)
    grad = tape.gradient(value, model.alpha_normal).numpy()
    assert float(value) == pytest.approx(0.2 * float(term.last_ms), rel=1e-5)
    assert (grad[:, 5] > 0).all()  # gradient descent moves alpha away from the slow op
    assert int(term.calls) == 1


def test_target_mode_moves_lambda_the_right_way():
    model = _Model()
    over = latency.LatencyTerm(_costly_sep5, lambda_=0.1, m=20, target_ms=5.0)    # estimate ~17 ms > 5
    under = latency.LatencyTerm(_costly_sep5, lambda_=0.1, m=20, target_ms=100.0)
    for _ in range(3):
        over(model)
        under(model)
    assert float(over.lambda_) > 0.1 > float(under.lambda_) >= 0.0
    assert float(over.derived_ms) == pytest.approx(8.0)  # ties: 2 edges per node, op 1: 8 x 1 ms


@pytest.mark.parametrize('with_beta', [False, True])
def test_derived_encoding_is_the_genotype_the_search_returns(with_beta):
    from ladnas_tf import supernet
    rng = np.random.default_rng(3)
    for _ in range(5):
        weights = tf.nn.softmax(tf.constant(rng.normal(size=(14, 8)), tf.float32))
        beta = tf.constant(rng.uniform(0.1, 1, size=14), tf.float32) if with_beta else None
        cell = supernet.derive_cell(weights.numpy(), None if beta is None else beta.numpy())
        expected = np.asarray(search_space.encode_cell(cell), np.float32).reshape(-1)
        np.testing.assert_array_equal(latency.derived_encoding(weights, beta).numpy(), expected)


def test_the_target_steers_the_derived_genotype_not_the_sampled_mean():
    model = _Model()
    model.alpha_normal.assign(tf.one_hot([5] * 14, 8) * 3.0)  # sep_conv_5x5 strongest everywhere
    term = latency.LatencyTerm(_costly_sep5, lambda_=0.1, m=20, target_ms=50.0)
    term(model)
    assert float(term.derived_ms) == pytest.approx(88.0)  # 8 kept edges x (10 + 1) ms
    assert float(term.lambda_) == pytest.approx(0.1 + 0.05 * (88.0 - 50.0) / 50.0)


def test_under_the_target_the_term_stops_pushing():
    model = _Model()  # derived genotype: 8 ms
    under, over = (latency.LatencyTerm(_costly_sep5, lambda_=0.5, m=20, target_ms=t) for t in (10.0, 6.0))
    with tf.GradientTape(persistent=True) as tape:
        quiet, pushing = under(model), over(model)
    assert float(quiet) == 0.0 and float(under.last_ms) > 0  # LAT(alpha) still estimated and logged
    assert float(pushing) > 0 and np.abs(tape.gradient(pushing, model.alpha_normal).numpy()).max() > 0


def test_bad_term_settings_are_refused():
    with pytest.raises(ValueError, match='at least one sample'):
        latency.LatencyTerm(_costly_sep5, m=0)
    with pytest.raises(ValueError, match='target latency must be positive'):
        latency.LatencyTerm(_costly_sep5, target_ms=-1)
    with pytest.raises(ValueError, match="not 'reduce'"):
        latency.LatencyTerm(_costly_sep5, cells='reduce')
