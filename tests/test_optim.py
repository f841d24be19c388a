"""The one weight optimizer (search and training): PyTorch's SGD rule, step by step against NumPy with
a changing learning rate, against torch.optim.SGD where torch is installed, and train's update order
(clip, then the coupled decay inside the optimizer)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import needs
from ladnas_tf import architect, optim, train

RNG = np.random.default_rng(0)


def _numpy_sgd(weights, grads, rates, momentum, wd):
    """The rule written out: g += wd * w; buf = momentum * buf + g; w -= lr * buf (buf starts at 0)."""
    w = [np.array(x, np.float64) for x in weights]
    buf = [np.zeros_like(x) for x in w]
    history = []
    for step_grads, lr in zip(grads, rates):
        for i, g in enumerate(step_grads):
            buf[i] = momentum * buf[i] + g + wd * w[i]
            w[i] = w[i] - lr * buf[i]
        history.append(([x.copy() for x in w], [b.copy() for b in buf]))
    return history


def _problem(steps=12):
    weights = [RNG.normal(size=(3, 2)), RNG.normal(size=(4,))]
    grads = [[RNG.normal(size=w.shape) for w in weights] for _ in range(steps)]
    return weights, grads


def test_one_optimizer_for_search_and_training():
    assert architect.MomentumSGD is optim.MomentumSGD
    opt = train.make_optimizer(train.Recipe(epochs=2, momentum=0.8, weight_decay=1e-3), steps_per_epoch=3)
    assert isinstance(opt, optim.MomentumSGD) and (opt.momentum, opt.l2) == (0.8, 1e-3)


def test_step_by_step_against_numpy_on_a_cosine_schedule():
    weights, grads = _problem()
    schedule = train.Schedule(0.5, len(grads), 'cosine', warmup_steps=3)  # warm-up, then cosine: lr moves every step
    rates = [float(schedule(s)) for s in range(len(grads))]
    assert len(set(np.round(rates, 6))) == len(rates)
    variables = [keras.Variable(w.astype(np.float32)) for w in weights]
    opt = optim.MomentumSGD(schedule, momentum=0.9, l2=0.01)
    opt.build(variables)
    expected = _numpy_sgd(weights, grads, rates, 0.9, 0.01)
    for step_grads, (w, buf) in zip(grads, expected):
        opt.apply([tf.constant(g, tf.float32) for g in step_grads], variables)
        for v, ew, eb in zip(variables, w, buf):
            np.testing.assert_allclose(v.numpy(), ew, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(opt.momentum_of(v).numpy(), eb, rtol=1e-5, atol=1e-6)


def test_keras_sgd_is_not_this_rule_once_the_rate_changes():
    """Why the optimizer exists: Keras' SGD (v = m v - lr g) departs from PyTorch's under a schedule."""
    weights, grads = _problem(4)
    rates = [0.1, 0.05, 0.02, 0.01]
    variables = [keras.Variable(w.astype(np.float32)) for w in weights]
    keras_sgd = keras.optimizers.SGD(learning_rate=lambda: rates[int(keras_sgd.iterations)], momentum=0.9)
    for step_grads in grads:
        keras_sgd.apply([tf.constant(g, tf.float32) for g in step_grads], variables)
    expected = _numpy_sgd(weights, grads, rates, 0.9, 0.0)[-1][0]
    assert max(np.abs(v.numpy() - e).max() for v, e in zip(variables, expected)) > 1e-3


def test_against_torch_sgd_when_installed():
    torch = needs.module('torch', 'pip install -r requirements-test.txt; .ci/run does')
    weights, grads = _problem()
    rates = list(np.linspace(0.3, 0.01, len(grads)))
    params = [torch.nn.Parameter(torch.tensor(w, dtype=torch.float64)) for w in weights]
    torch_opt = torch.optim.SGD(params, lr=rates[0], momentum=0.9, weight_decay=0.01)
    variables = [keras.Variable(w.astype(np.float32)) for w in weights]
    opt = optim.MomentumSGD(lambda: rates[int(opt.iterations)], momentum=0.9, l2=0.01)
    opt.build(variables)
    for step_grads, lr in zip(grads, rates):
        for p, g in zip(params, step_grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        for group in torch_opt.param_groups:
            group['lr'] = lr
        torch_opt.step()
        opt.apply([tf.constant(g, tf.float32) for g in step_grads], variables)
        for v, p in zip(variables, params):
            np.testing.assert_allclose(v.numpy(), p.detach().numpy(), rtol=1e-5, atol=1e-6)


class _Weights:
    def __init__(self, variables):
        self.trainable_variables = variables


def test_training_update_clips_before_the_decay():
    """DARTS: clip_grad_norm_ on the raw gradient, then optimizer.step() adds the decay."""
    weights, grads = _problem(3)
    recipe = train.Recipe(grad_clip=0.5, weight_decay=0.1, momentum=0.9)
    variables = [tf.Variable(w.astype(np.float32)) for w in weights]
    opt = optim.MomentumSGD(0.2, recipe.momentum, recipe.weight_decay)
    opt.build(variables)
    clipped = []
    for step_grads in grads:
        norm = np.sqrt(sum((g ** 2).sum() for g in step_grads))
        clipped.append([g * min(1.0, 0.5 / norm) for g in step_grads])
        train.apply_update(_Weights(variables), opt, [tf.constant(g, tf.float32) for g in step_grads], recipe)
    expected = _numpy_sgd(weights, clipped, [0.2] * 3, 0.9, 0.1)[-1][0]
    for v, e in zip(variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match='momentum'):
        optim.MomentumSGD(0.1, momentum=1.0)
    with pytest.raises(ValueError, match='weight decay'):
        optim.MomentumSGD(0.1, l2=-1.0)
