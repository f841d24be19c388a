"""The bi-level search step (DARTS, paper section 3.1): alpha on the architecture batch, then the
network weights on the weight batch, with tf.GradientTape.

Weights: optim.MomentumSGD (PyTorch's SGD: momentum 0.9, L2 weight decay added to the clipped
gradient; the same optimizer as train.py), the cosine schedule per epoch, global-norm clipping 5.
Alpha (and beta): Adam (0.5, 0.999) with its own L2 weight decay. First order uses the architecture
loss's gradient at the current weights; second order is DARTS's unrolled step
    w' = w - xi (mu * momentum_buffer + dL_train/dw + wd * w),    xi = the current learning rate
    dalpha = dL_arch(w', alpha)/dalpha - xi * (dL_train(w+, alpha) - dL_train(w-, alpha))/dalpha / (2 eps)
with w+- = w +- eps v, v = dL_arch(w', alpha)/dw', eps = 0.01 / ||v||: the finite-difference
Hessian-vector product. The unrolled and perturbed weights enter the network through a
keras.StatelessScope (no variable is touched, so it also runs inside a replica context), which also
keeps these extra forward passes from updating BN's moving statistics.

The architecture loss is pluggable: ArchLoss(model, x, y) = L_val + the sum of registered terms,
each a callable(model) -> scalar (the latency term LAT(alpha) plugs in here). With no term it is
exactly DARTS's search.

Under tf.distribute every replica computes its share of the global batch; gradients are all-reduced
before clipping and before any use, and BN statistics are synchronised (supernet.py), so N replicas
follow one replica on the same global batch and alpha stays identical on every replica.
"""
import contextlib
import dataclasses
import math

import keras
import tensorflow as tf

from ladnas_tf import supernet
from ladnas_tf.bad_input import BadInput
from ladnas_tf.optim import MomentumSGD  # noqa: F401  (the weight optimizer, shared with train.py)
from ladnas_tf.settings import option

ORDERS = ('first', 'second')


class SearchConfigError(BadInput):
    """A search setting that cannot work."""


@dataclasses.dataclass(frozen=True)
class ArchitectConfig:
    """The bi-level optimisation's settings (their help is what tools.search shows)."""
    order: str = option('first', "First-order, or DARTS's unrolled second-order step.", choices=ORDERS)
    learning_rate: float = option(0.025, 'Initial weight learning rate (cosine to --learning_rate_min).')
    learning_rate_min: float = option(0.001, 'Final weight learning rate.')
    momentum: float = option(0.9, 'Weight SGD momentum.')
    weight_decay: float = option(3e-4, 'Weight L2 decay (added to the gradients).')
    grad_clip: float = option(5.0, 'Global-norm clip of the weight gradients (0 = off).')
    arch_learning_rate: float = option(3e-4, 'Adam learning rate of alpha (and beta).')
    arch_beta_1: float = option(0.5, "Adam's beta_1 of alpha (and beta).")
    arch_beta_2: float = option(0.999, "Adam's beta_2 of alpha (and beta).")
    arch_weight_decay: float = option(1e-3, 'L2 decay of alpha (and beta).')
    unrolled_radius: float = option(0.01, "DARTS's r of the second-order step: eps = r / ||v||.")

    def __post_init__(self):
        if self.order not in ORDERS:
            raise SearchConfigError(f'unknown order {self.order!r} (known: {", ".join(ORDERS)})')
        for name in ('learning_rate', 'arch_learning_rate'):
            if not getattr(self, name) > 0:
                raise SearchConfigError(f'{name} must be positive, got {getattr(self, name)}')
        for name in ('weight_decay', 'arch_weight_decay', 'learning_rate_min', 'grad_clip'):
            if getattr(self, name) < 0:
                raise SearchConfigError(f'{name} must not be negative, got {getattr(self, name)}')


@keras.saving.register_keras_serializable('ladnas_tf')
class EpochCosine(keras.optimizers.schedules.LearningRateSchedule):
    """DARTS's CosineAnnealingLR stepped once per epoch: epoch e of E gets
    minimum + (initial - minimum) (1 + cos(pi e / E)) / 2."""

    def __init__(self, initial, minimum, epochs, steps_per_epoch):
        self.initial, self.minimum = float(initial), float(minimum)
        self.epochs, self.steps_per_epoch = int(epochs), int(steps_per_epoch)

    def __call__(self, step):
        epoch = tf.cast(tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_epoch), tf.float32)
        cosine = 0.5 * (1. + tf.cos(math.pi * epoch / max(self.epochs, 1)))
        return self.minimum + (self.initial - self.minimum) * cosine

    def get_config(self):
        return {'initial': self.initial, 'minimum': self.minimum, 'epochs': self.epochs,
                'steps_per_epoch': self.steps_per_epoch}


def cross_entropy_sum(logits, labels):
    return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(labels, tf.int32), logits))


def correct_count(logits, labels):
    return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                          tf.cast(labels, tf.int32)), tf.float32))


class ArchLoss:
    """The architecture loss L_val + sum of extra terms: (model, x, y) -> (loss, logs).

    Each term is a callable(model) -> scalar added with weight 1 (a term carries its own lambda).
    Under tf.distribute the data part is this replica's share of the global-batch mean and each term
    is divided by the replica count, so the all-reduced sum counts every part once."""

    def __init__(self, terms=None):
        self.terms = dict(terms or {})

    def add_term(self, name, fn):
        if name in self.terms or name in ('loss', 'val_loss'):
            raise BadInput(f'architecture loss term {name!r} is already registered')
        self.terms[name] = fn

    def __call__(self, model, x, y):
        logits = model(x, training=True)
        val = cross_entropy_sum(logits, y) / tf.cast(_global_batch(x), logits.dtype)
        replicas = tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, logits.dtype)
        logs = {'val_loss': val}
        total = val
        for name, fn in self.terms.items():
            value = tf.cast(fn(model), logits.dtype) / replicas
            logs[name] = value
            total = total + value
        logs['loss'] = total
        return total, logs


@contextlib.contextmanager
def without_grappler():
    """Grappler spends ~10 s optimising the 10k-node step graphs on their first call and gains
    nothing measurable per step on CPU (measured at C=8, 5 cells), so the steps are instantiated
    without it. The option is read when a function is first called; it is restored afterwards."""
    before = tf.config.optimizer.get_experimental_options().get('disable_meta_optimizer', False)
    tf.config.optimizer.set_experimental_options({'disable_meta_optimizer': True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({'disable_meta_optimizer': before})


def _gradients(tape, loss, sources):
    """tape.gradient with zeros for unused sources (alpha_normal with no normal cell, say)."""
    return [tf.zeros_like(s) if g is None else g for g, s in zip(tape.gradient(loss, sources), sources)]


def _all_reduce(values):
    ctx = tf.distribute.get_replica_context()
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values) if ctx.num_replicas_in_sync > 1 else values


def _global_batch(x):
    return tf.shape(x)[0] * tf.distribute.get_strategy().num_replicas_in_sync


class Architect:
    """Owns the two optimizers and the compiled steps of one supernet.

    step(weight_batch, arch_batch, update_arch) runs the architecture step (unless update_arch is
    False: PC-DARTS's warm-up) then the weight step, on (images, labels) batches (distributed values
    under a strategy), and returns the logs as Python floats."""

    def __init__(self, model, config=ArchitectConfig(), steps_per_epoch=1, epochs=1, arch_loss=None,
                 strategy=None):
        if config.order == 'second' and getattr(model, 'recompute', False):
            raise BadInput('a recomputing supernet supports the first-order step only: the unrolled '
                             'step substitutes the weights, which the recomputed pass would not see')
        self.model, self.config = model, config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.arch_loss = arch_loss if arch_loss is not None else ArchLoss()
        self.weight_vars, self.arch_vars = model.weight_parameters(), model.arch_parameters()
        with self.strategy.scope():
            self.schedule = EpochCosine(config.learning_rate, config.learning_rate_min, epochs, steps_per_epoch)
            self.weight_optimizer = MomentumSGD(self.schedule, config.momentum, config.weight_decay)
            self.arch_optimizer = keras.optimizers.Adam(config.arch_learning_rate, config.arch_beta_1,
                                                        config.arch_beta_2, epsilon=1e-8, name='arch_adam')
            self.weight_optimizer.build(self.weight_vars)  # momentum buffers exist before the first unroll
            self.arch_optimizer.build(self.arch_vars)
        # One traced function for the whole step (architecture and weight step): one trace, one graph
        # to instantiate. No autograph: the steps have no tensor-dependent Python control flow.
        self._step = tf.function(self._step_fn, reduce_retracing=True, autograph=False)
        self._evaluate = tf.function(self._evaluate_fn, reduce_retracing=True, autograph=False)

    @property
    def learning_rate(self):
        return float(self.weight_optimizer.learning_rate)

    # ---- gradients, run per replica ----

    def _train_gradients(self, x, y, substitutes=None, wrt=None):
        """All-reduced gradient of the weight-batch loss w.r.t. `wrt`, with weights replaced by
        `substitutes` (w -> tensor); BN statistics untouched."""
        wrt = self.weight_vars if wrt is None else wrt
        with keras.StatelessScope(state_mapping=substitutes), supernet.discarded_statistics(), \
                tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = cross_entropy_sum(logits, y) / tf.cast(_global_batch(x), logits.dtype)
        return _all_reduce(_gradients(tape, loss, wrt))

    def arch_gradients(self, x_train, y_train, x_arch, y_arch):
        """The architecture gradient (without weight decay), all-reduced; and the arch loss logs."""
        if self.config.order == 'first':
            with keras.StatelessScope(), supernet.discarded_statistics(), tf.GradientTape() as tape:
                _, logs = self.arch_loss(self.model, x_arch, y_arch)
            return _all_reduce(_gradients(tape, logs['loss'], self.arch_vars)), logs
        return self._unrolled_gradients(x_train, y_train, x_arch, y_arch)

    def _unrolled_gradients(self, x_train, y_train, x_arch, y_arch):
        xi = tf.cast(self.weight_optimizer.learning_rate, self.model.compute_dtype)
        opt, wd = self.weight_optimizer, self.config.weight_decay
        grads = self._train_gradients(x_train, y_train)
        unrolled = [w - xi * (opt.momentum * opt.momentum_of(w) + g + wd * w)
                    for w, g in zip(self.weight_vars, grads)]
        with keras.StatelessScope(state_mapping=list(zip(self.weight_vars, unrolled))), \
                supernet.discarded_statistics(), tf.GradientTape() as tape:
            tape.watch(unrolled)
            _, logs = self.arch_loss(self.model, x_arch, y_arch)
        grads = _all_reduce(_gradients(tape, logs['loss'], unrolled + self.arch_vars))
        v, dalpha = grads[:len(unrolled)], grads[len(unrolled):]
        eps = self.config.unrolled_radius / tf.linalg.global_norm(v)
        plus = self._train_gradients(x_train, y_train, [(w, w + eps * d) for w, d in zip(self.weight_vars, v)],
                                     self.arch_vars)
        minus = self._train_gradients(x_train, y_train, [(w, w - eps * d) for w, d in zip(self.weight_vars, v)],
                                      self.arch_vars)
        dalpha = [g - xi * (p - m) / (2. * eps) for g, p, m in zip(dalpha, plus, minus)]
        return dalpha, logs

    # ---- compiled steps ----

    def _reduce(self, logs):
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in logs.items()}

    def _apply(self, optimizer, grads, variables):
        """Applies already all-reduced gradients from a replica context. Keras' optimizers all-reduce
        (sum) what they are given there, so each replica hands in its 1/N share."""
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        optimizer.apply([g / replicas for g in grads] if replicas > 1 else grads, variables)

    def _arch_step_fn(self, weight_batch, arch_batch):
        def replica(weight_batch, arch_batch):
            grads, logs = self.arch_gradients(*weight_batch, *arch_batch)
            grads = [g + self.config.arch_weight_decay * a for g, a in zip(grads, self.arch_vars)]
            self._apply(self.arch_optimizer, grads, self.arch_vars)
            return logs
        with self.strategy.scope():
            logs = self.strategy.run(replica, args=(weight_batch, arch_batch))
            return self._reduce({f'arch_{k}': v for k, v in logs.items()})

    def _step_fn(self, weight_batch, arch_batch, update_arch):
        logs = self._arch_step_fn(weight_batch, arch_batch) if update_arch else {}
        return {**logs, **self._weight_step_fn(weight_batch)}

    def _weight_step_fn(self, batch):
        def replica(x, y):
            with tf.GradientTape() as tape:
                logits = self.model(x, training=True)
                loss = cross_entropy_sum(logits, y) / tf.cast(_global_batch(x), logits.dtype)
            grads = _all_reduce(_gradients(tape, loss, self.weight_vars))
            if self.config.grad_clip > 0:
                grads, _ = tf.clip_by_global_norm(grads, self.config.grad_clip)
            self._apply(self.weight_optimizer, grads, self.weight_vars)
            return {'loss': loss, 'correct': correct_count(logits, y), 'count': tf.cast(tf.shape(y)[0], tf.float32)}
        with self.strategy.scope():
            return self._reduce(self.strategy.run(replica, args=batch))

    def _evaluate_fn(self, batch):
        def replica(x, y):
            logits = self.model(x, training=False)
            return {'loss_sum': cross_entropy_sum(logits, y), 'correct': correct_count(logits, y),
                    'count': tf.cast(tf.shape(y)[0], tf.float32)}
        with self.strategy.scope():
            return self._reduce(self.strategy.run(replica, args=batch))

    # ---- public API ----

    def step(self, weight_batch, arch_batch=None, update_arch=True):
        """One search step; returns {name: float} (loss, correct, count, arch_* when alpha moved)."""
        if update_arch and arch_batch is None:
            raise BadInput('the architecture step needs an architecture batch')
        with without_grappler():
            logs = self._step(weight_batch, arch_batch if update_arch else None, bool(update_arch))
        return {k: float(v) for k, v in logs.items()}

    def evaluate(self, batch):
        """Sums over one batch with BN's moving statistics: loss_sum, correct, count."""
        with without_grappler():
            return {k: float(v) for k, v in self._evaluate(batch).items()}
