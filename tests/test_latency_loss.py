"""LAT(alpha) by sampling, its straight-through gradient, and the FLOPs-aware term."""
import numpy as np
import pytest
import tensorflow as tf

from ladnas_tf import search_space
from ladnas_tf.latency import loss


@pytest.fixture(scope='module')
def alpha():
    return tf.Variable(np.random.default_rng(0).normal(0, 1, (14, 8)), dtype=tf.float64)


def test_samples_are_valid_sub_networks(alpha):
    enc = loss.sample_encodings(alpha, 200, [1, 2]).numpy()
    for row in enc:
        cell = search_space.decode_cell(row)  # raises on anything but a valid discrete cell
        assert 'none' not in [op for op, _ in cell]


def test_sampling_distribution_matches_alpha(alpha):
    m = 20000
    enc = loss.sample_encodings(alpha, m, [3, 4]).numpy().reshape(m, 14, 8)
    kept = enc.sum(-1).mean(0)
    expected_keep = [2 / j for _, j in search_space.EDGES]
    np.testing.assert_allclose(kept, expected_keep, atol=0.02)
    op_freq = enc.sum(0)[:, 1:] / enc.sum((0, 2))[:, None]
    np.testing.assert_allclose(op_freq, loss.op_probabilities(alpha).numpy(), atol=0.03)


def test_samples_are_seeded(alpha):
    a = loss.sample_encodings(alpha, 5, [7, 7])
    assert np.array_equal(a, loss.sample_encodings(alpha, 5, [7, 7]))
    assert not np.array_equal(a, loss.sample_encodings(alpha, 5, [7, 8]))


def test_gradient_agrees_with_finite_differences_of_the_exact_expectation(alpha):
    w = np.random.default_rng(1).uniform(0, 1, 112)
    lpm = lambda e: tf.linalg.matvec(e, tf.constant(w, e.dtype))
    with tf.GradientTape() as tape:
        estimate = loss.latency(alpha, lpm, 4000, [5, 6])
    grad = tape.gradient(estimate, alpha).numpy()
    exact = lambda a: float(loss.expected_latency_linear(tf.constant(a), w))
    a0, eps = alpha.numpy(), 1e-5
    fd = np.zeros_like(a0)
    for idx in np.ndindex(*a0.shape):
        up, down = a0.copy(), a0.copy()
        up[idx] += eps
        down[idx] -= eps
        fd[idx] = (exact(up) - exact(down)) / (2 * eps)
    assert float(estimate) == pytest.approx(exact(a0), rel=0.02)
    big = np.abs(fd) > 0.05 * np.abs(fd).max()
    assert (np.sign(grad[big]) == np.sign(fd[big])).mean() > 0.95
    assert np.corrcoef(grad.ravel(), fd.ravel())[0, 1] > 0.95
    assert np.all(grad[:, 0] == 0)  # `none` never appears in a sub-network


def test_noise_is_added_only_when_asked(alpha):
    lpm = lambda e: tf.reduce_sum(e, -1)
    clean = loss.latency(alpha, lpm, 10, [1, 1])
    assert float(clean) == pytest.approx(8.0)
    assert float(loss.latency(alpha, lpm, 10, [1, 1], noise_sigma=0.5)) != pytest.approx(8.0)


def test_flops_term_prefers_cheap_ops():
    tables = loss.macs_table(16, 32, 8)
    assert tables[0][:, 0].sum() == 0  # none is free
    assert (tables[0][:, 5] > tables[0][:, 4]).all()  # 5x5 separable costs more than 3x3
    a_n = tf.Variable(tf.zeros((14, 8), tf.float64))
    a_r = tf.Variable(tf.zeros((14, 8), tf.float64))
    with tf.GradientTape() as tape:
        f = loss.flops(a_n, a_r, tables)
    g_n, _ = tape.gradient(f, [a_n, a_r])
    assert float(f) > 0
    assert (g_n.numpy()[:, 5] > 0).all() and (g_n.numpy()[:, 0] < 0).all()


class _Model:
    def __init__(self):
        self.alpha_normal = tf.Variable(np.zeros((14, 8)), dtype=tf.float32)
        self.alpha_reduce = tf.Variable(np.zeros((14, 8)), dtype=tf.float32)


def _costly_sep5(e):
    """A latency model where sep_conv_5x5 (op 5) is slow: 10 ms per such edge, 1 ms otherwise."""
    e = tf.reshape(e, (-1, 14, 8))
    return tf.reduce_sum(e[..., 5] * 10.0 + tf.reduce_sum(e, -1), -1)


def test_latency_term_lowers_the_slow_ops_weight():
    model, term = _Model(), loss.LatencyTerm(_costly_sep5, lambda_=0.2, m=50)
    with tf.GradientTape() as tape:
        value = term(model)
    grad = tape.gradient(value, model.alpha_normal).numpy()
    assert float(value) == pytest.approx(0.2 * float(term.last_ms), rel=1e-5)
    assert (grad[:, 5] > 0).all()  # gradient descent moves alpha away from the slow op
    assert int(term.calls) == 1


def test_target_mode_moves_lambda_the_right_way():
    model = _Model()
    over = loss.LatencyTerm(_costly_sep5, lambda_=0.1, m=20, target_ms=5.0)    # estimate ~17 ms > 5
    under = loss.LatencyTerm(_costly_sep5, lambda_=0.1, m=20, target_ms=100.0)
    for _ in range(3):
        over(model)
        under(model)
    assert float(over.lambda_) > 0.1 > float(under.lambda_) >= 0.0


def test_bad_term_settings_are_refused():
    with pytest.raises(ValueError, match='at least one sample'):
        loss.LatencyTerm(_costly_sep5, m=0)
    with pytest.raises(ValueError, match='target latency must be positive'):
        loss.LatencyTerm(_costly_sep5, target_ms=-1)
