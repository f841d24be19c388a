"""The bi-level step: DARTS's second-order gradient against the exact one from nested tapes, the
optimisers' update rules, the pluggable architecture loss and PC-DARTS's warm-up."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from ladnas_tf import architect, supernet

def _batch(rng, n, dtype=tf.float32):
    return (tf.constant(rng.normal(size=(n, 8, 8, 3)), dtype), tf.constant(rng.integers(0, 3, n), tf.int32))


@pytest.fixture(scope='module')
def searcher():
    model = supernet.build_supernet(4, 3, 3, 8, seed=0)
    return architect.Architect(model, architect.ArchitectConfig(), steps_per_epoch=4, epochs=3)


@pytest.mark.slow
def test_second_order_gradient_equals_the_exact_one():
    """dalpha of the unrolled step vs d/dalpha L_val(w - xi (mu buf + dL_train/dw + wd w), alpha)
    differentiated through the inner gradient by nested tapes, in float64. The finite difference
    uses a tiny radius here: with DARTS's 0.01/||v|| the perturbation crosses ReLU and max-pool kinks
    on such a tiny network and the difference quotient is no longer a derivative."""
    rng = np.random.default_rng(0)
    model = supernet.build_supernet(2, 3, 3, 8, seed=1, dtype='float64')
    config = architect.ArchitectConfig(order='second', learning_rate=0.1, unrolled_radius=1e-8)
    searcher = architect.Architect(model, config, steps_per_epoch=10, epochs=5)
    train, val = _batch(rng, 4, tf.float64), _batch(rng, 4, tf.float64)
    opt = searcher.weight_optimizer
    rng = np.random.default_rng(2)
    for w in searcher.weight_vars:  # non-zero momentum buffers, as after some steps
        opt.momentum_of(w).assign(1e-2 * rng.normal(size=w.shape))

    def exact():  # eager: at this size tracing would cost minutes, running eagerly seconds
        xi = tf.cast(opt.learning_rate, tf.float64)
        with tf.GradientTape() as outer:
            with keras.StatelessScope(), tf.GradientTape() as inner:
                loss = architect.cross_entropy_sum(model(train[0], training=True), train[1]) / 4.
            grads = inner.gradient(loss, searcher.weight_vars)
            unrolled = [w - xi * (opt.momentum * opt.momentum_of(w) + g + config.weight_decay * w)
                        for w, g in zip(searcher.weight_vars, grads)]
            with keras.StatelessScope(state_mapping=list(zip(searcher.weight_vars, unrolled))):
                val_loss = architect.cross_entropy_sum(model(val[0], training=True), val[1]) / 4.
        return outer.gradient(val_loss, searcher.arch_vars)

    unrolled = searcher.arch_gradients(*train, *val)[0]
    plain = architect.Architect(model, architect.ArchitectConfig(), 10, 5)
    first_order = plain.arch_gradients(*train, *val)[0]
    for approx, exact_, first in zip(unrolled, exact(), first_order):
        scale = np.linalg.norm(exact_)
        assert np.linalg.norm(approx - exact_) / scale < 1e-4
        assert np.linalg.norm(first - exact_) / scale > 0.05  # the second-order term is really there


def test_momentum_sgd_is_pytorchs_rule():
    var = keras.Variable(np.array([1.0, -2.0], np.float32))
    rates = iter([0.1, 0.05, 0.02])
    opt = architect.MomentumSGD(learning_rate=lambda: next(rates), momentum=0.9, l2=0.01)
    opt.build([var])
    w, buf = np.array([1.0, -2.0]), np.zeros(2)
    for lr, g in zip((0.1, 0.05, 0.02), ([0.5, 0.1], [-0.2, 0.3], [0.4, 0.4])):
        opt.apply([tf.constant(g, tf.float32)], [var])
        buf = 0.9 * buf + np.array(g) + 0.01 * w      # torch.optim.SGD(momentum=0.9, weight_decay=0.01)
        w = w - lr * buf
        np.testing.assert_allclose(var.numpy(), w, rtol=1e-6)
        np.testing.assert_allclose(opt.momentum_of(var).numpy(), buf, rtol=1e-6)


def test_cosine_schedule_steps_per_epoch():
    schedule = architect.EpochCosine(0.025, 0.001, epochs=4, steps_per_epoch=10)
    lrs = [float(schedule(s)) for s in (0, 9, 10, 20, 39)]
    assert lrs[0] == lrs[1] == pytest.approx(0.025)
    assert lrs[2] == pytest.approx(0.001 + 0.024 * (1 + np.cos(np.pi / 4)) / 2)
    assert lrs[3] == pytest.approx(0.013)
    assert lrs[4] < lrs[3]


def test_extra_terms_add_to_the_architecture_gradient(searcher):
    rng = np.random.default_rng(1)
    train, val = _batch(rng, 4), _batch(rng, 4)
    plain = [g.numpy() for g in searcher.arch_gradients(*train, *val)[0]]
    loss = architect.ArchLoss()
    loss.add_term('l2', lambda m: 0.5 * tf.reduce_sum(tf.square(m.alpha_normal.value)))
    with_term = architect.Architect(searcher.model, searcher.config, 4, 3, arch_loss=loss)
    grads, logs = with_term.arch_gradients(*train, *val)
    np.testing.assert_allclose(grads[0].numpy() - plain[0], searcher.model.alpha_normal.numpy(), atol=1e-6)
    np.testing.assert_allclose(grads[1].numpy(), plain[1], atol=1e-7)
    assert float(logs['loss']) == pytest.approx(float(logs['val_loss'] + logs['l2']))
    with pytest.raises(ValueError, match='already registered'):
        loss.add_term('l2', lambda m: 0.)


@pytest.mark.slow
def test_a_zero_term_is_exactly_the_plain_search():
    rng = np.random.default_rng(2)
    train, val = _batch(rng, 4), _batch(rng, 4)
    results = []
    for terms in ({}, {'latency': lambda m: 0.0 * tf.reduce_sum(m.alpha_normal.value)}):
        model = supernet.build_supernet(4, 3, 3, 8, seed=5)
        searcher = architect.Architect(model, architect.ArchitectConfig(), 4, 3, architect.ArchLoss(terms))
        searcher.step(train, val)
        results.append([v.numpy() for v in model.arch_parameters() + model.weight_parameters()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_arch_step_is_adam_with_weight_decay_and_warmup_freezes_alpha(searcher):
    searcher = architect.Architect(searcher.model, searcher.config, 4, 3)  # fresh optimizers: Adam's first step
    rng = np.random.default_rng(3)
    train, val = _batch(rng, 4), _batch(rng, 4)
    alpha = [v.numpy().copy() for v in searcher.arch_vars]
    weights = [v.numpy().copy() for v in searcher.weight_vars[:3]]
    logs = searcher.step(train, val, update_arch=False)
    assert {'loss', 'correct', 'count'} <= set(logs) and 'arch_loss' not in logs
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(alpha, searcher.arch_vars))
    assert not all(np.array_equal(w, v.numpy()) for w, v in zip(weights, searcher.weight_vars[:3]))

    grads = [g.numpy() + 1e-3 * a for g, a in zip(searcher.arch_gradients(*train, *val)[0], alpha)]
    assert int(searcher.arch_optimizer.iterations) == 0
    logs = searcher.step(train, val)
    assert 'arch_loss' in logs and int(searcher.arch_optimizer.iterations) == 1
    checked = 0
    for a, g, v in zip(alpha, grads, searcher.arch_vars):  # Adam's first step: ~lr against the gradient's sign
        moved = a - v.numpy()
        big = np.abs(g) > 1e-4  # Adam's epsilon matters below
        np.testing.assert_allclose(moved[big], 3e-4 * np.sign(g[big]), rtol=1e-2)
        checked += int(big.sum())
    assert checked > 0


@pytest.mark.slow
def test_weight_gradients_are_clipped_to_the_global_norm():
    rng = np.random.default_rng(4)
    model = supernet.build_supernet(4, 3, 3, 8, seed=2)
    config = architect.ArchitectConfig(grad_clip=1e-3, momentum=0.0, weight_decay=0.0, learning_rate=1.0,
                                       learning_rate_min=1.0)
    searcher = architect.Architect(model, config, 4, 3)
    before = [v.numpy().copy() for v in searcher.weight_vars]
    searcher.step(_batch(rng, 4), update_arch=False)
    step = np.sqrt(sum(np.sum((b - v.numpy()) ** 2) for b, v in zip(before, searcher.weight_vars)))
    assert step == pytest.approx(1e-3, rel=1e-3)


def test_bad_settings_are_refused():
    with pytest.raises(architect.SearchConfigError, match='unknown order'):
        architect.ArchitectConfig(order='third')
    with pytest.raises(architect.SearchConfigError, match='arch_learning_rate'):
        architect.ArchitectConfig(arch_learning_rate=0)


def test_second_order_refuses_a_recomputing_supernet():
    model = supernet.build_supernet(4, 3, 3, 8, seed=0, recompute=True)
    with pytest.raises(ValueError, match='first-order step only'):
        architect.Architect(model, architect.ArchitectConfig(order='second'))
    architect.Architect(model, architect.ArchitectConfig(order='first'))  # the first order is fine
