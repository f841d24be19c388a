"""The latency term of the paper's architecture loss: LAT(alpha) (Eq. 2) and lambda_ * LAT(alpha) (Eq. 3).

LAT(alpha) = E[LPM(gamma)], gamma ~ S(alpha): per intermediate node 2 of its input edges uniformly,
per kept edge one op drawn from softmax(alpha) over the 7 non-`none` ops. The expectation is the mean
over M sampled sub-networks. The gradient reaches alpha through the samples by a straight-through
encoding: its value is the sampled one-hot 112-bit vector the LPM was trained on, its gradient that of
the op probabilities, so d LAT / d alpha is the average over samples of d LPM / d gamma_m through p.

The paper's LPM reads the normal cell only (112 bits, alpha_normal). An LPM that reads both cells
(224 bits: normal then reduction, dataset.CELLS['both']) gets sub-networks whose normal cell is drawn from
alpha_normal and whose reduction cell from alpha_reduce, so LAT(alpha) constrains both cells.
"""
import numpy as np
import tensorflow as tf

from ladnas_tf import search_space
from ladnas_tf.bad_input import BadInput
from ladnas_tf.lpm import dataset

SAMPLED_CELLS = ('normal', 'both')  # the LPM encodings LAT(alpha) can sample (keys of dataset.CELLS)

_NODE_EDGES = [[e for e, (_, j) in enumerate(search_space.EDGES) if j == node + search_space.NUM_INPUTS]
               for node in range(search_space.NUM_NODES)]


def op_probabilities(alpha):
    """softmax over the non-`none` ops of each edge: [14, 7]."""
    return tf.nn.softmax(alpha[:, 1:], axis=-1)


def _cells(alphas):
    """One alpha, or a list of them (one per encoded cell), as a list."""
    return list(alphas) if isinstance(alphas, (list, tuple)) else [alphas]


def sample_encodings(alphas, m, seed):
    """M relaxed encodings [m, 112 * cells] of sub-networks drawn from S(alpha): `alphas` is one alpha
    or a list, one per cell the LPM encodes, in its order. `seed` is a stateless seed [2]; the first
    cell draws with it (so one alpha gives the normal-only draw), each further cell with an
    independent seed folded from it."""
    seed = tf.convert_to_tensor(seed, tf.int64)
    parts = [_sample_cell(alpha, m, seed if k == 0 else
                          tf.cast(tf.random.experimental.stateless_fold_in(seed, k), tf.int64))
             for k, alpha in enumerate(_cells(alphas))]
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)


def _sample_cell(alpha, m, seed):
    """M relaxed encodings [m, 112] of one cell drawn from S(alpha)."""
    probs = op_probabilities(alpha)
    masks = []
    for node, edges in enumerate(_NODE_EDGES):
        # Uniform pair of inputs: the 2 largest of n iid uniforms are a uniform 2-subset.
        u = tf.random.stateless_uniform((m, len(edges)), seed + [0, node + 1])
        kept = tf.math.top_k(u, search_space.INPUTS_PER_NODE).indices
        masks.append(tf.reduce_max(tf.one_hot(kept, len(edges), dtype=probs.dtype), axis=1))
    mask = tf.concat(masks, axis=1)                                            # [m, 14]
    logits = tf.math.log(tf.stop_gradient(probs))
    choice = tf.random.stateless_categorical(logits, m, seed + [0, 99])       # [14, m]
    one_hot = tf.one_hot(tf.transpose(choice), len(search_space.CANDIDATE_OPS), dtype=probs.dtype)
    straight = one_hot + (probs - tf.stop_gradient(probs))  # exactly one_hot in value
    relaxed = tf.concat([tf.zeros_like(straight[..., :1]), straight], -1) * mask[..., None]
    return tf.reshape(relaxed, (m, search_space.ENCODING_SIZE))


def derived_encoding(op_weights, edge_weights=None):
    """The 112-bit encoding of the cell the search would return now (supernet.derive_cell, DARTS's
    parse(), in TensorFlow ops): per node the 2 edges with the strongest non-none op, each with that op."""
    w = op_weights if edge_weights is None else op_weights * edge_weights[:, None]
    strength, op = tf.reduce_max(w[:, 1:], axis=1), tf.argmax(w[:, 1:], axis=1) + 1  # ties: lowest op
    mask = tf.concat([tf.reduce_max(tf.one_hot(tf.math.top_k(tf.gather(strength, edges),
                                                             search_space.INPUTS_PER_NODE).indices,
                                               len(edges), dtype=w.dtype), axis=0)
                      for edges in _NODE_EDGES], axis=0)
    return tf.reshape(tf.one_hot(op, search_space.NUM_OPS, dtype=w.dtype) * mask[:, None],
                      [search_space.ENCODING_SIZE])


def latency(alphas, lpm_fn, m, seed, error=None):
    """LAT(alpha) in the LPM's unit (ms): the mean prediction over M samples (alphas as in
    sample_encodings). `error` (an errors.ErrorModel) perturbs what the search reads: each sample's
    prediction (multiplicative, systematic, another predictor) or the mean (additive, Table 3)."""
    x = sample_encodings(alphas, m, seed)
    if error is None:
        return tf.reduce_mean(lpm_fn(x))
    return error.on_mean(tf.reduce_mean(error.per_sample(lpm_fn, x, seed)), seed)


def expected_latency_linear(alphas, weights):
    """E[w . gamma] exactly, for a linear latency model w [112 * cells] (alphas as in sample_encodings):
    the tests' reference expectation. The cells are drawn independently, so it is the sum over cells."""
    keep = np.array([search_space.INPUTS_PER_NODE / (j) for _, j in search_space.EDGES])  # node j has j inputs
    alphas = _cells(alphas)
    per_cell = tf.split(tf.convert_to_tensor(weights), len(alphas))
    total = 0.0
    for alpha, w in zip(alphas, per_cell):
        probs = op_probabilities(alpha)
        w = tf.reshape(tf.cast(w, probs.dtype), (search_space.NUM_EDGES, search_space.NUM_OPS))[:, 1:]
        total += tf.reduce_sum(keep * tf.reduce_sum(probs * w, axis=-1))
    return total


class LatencyTerm:
    """lambda_ * LAT(alpha) / scale_ms for the architecture loss (paper Eq. 3): a callable(model)
    -> scalar. `cells` is what the LPM encodes: 'normal' samples model.alpha_normal (the paper), 'both'
    model.alpha_normal and model.alpha_reduce. With scale_ms the latency of a reference network on the
    target, lambda_ is a weight per reference latency: the same lambda_ means the same trade-off on a
    fast and on a slow device.

    Each call draws fresh sub-networks (a stateless seed advanced per call, so replicas agree and a
    resumed run repeats the same draws). `error` (errors.ErrorModel) is what the search believes in
    place of lpm_fn: LAT(alpha) and the target mode's prediction both read it. With `target_ms`, lambda_
    follows dual ascent on the
    constraint on the LPM's prediction for the genotype the search would derive now (derived_encoding):
    lambda_ grows while that exceeds the target and shrinks (never below 0) while it is under, so the
    user states a latency instead of guessing lambda. The term pushes only while that prediction is
    over the target: the plain loss barely pulls latency back up, so a push that outlives the crossing
    (lambda_ still high) would overshoot. And not on LAT(alpha) itself: sub-networks sampled with
    uniform inputs are slower than the derived one (the strongest edges), which would then land far
    under the target. Both measured: docs/notes_measured.md."""

    def __init__(self, lpm_fn, lambda_=0.1, m=20, seed=0, error=None, target_ms=None, dual_lr=0.05,
                 scale_ms=1.0, cells='normal'):
        if cells not in SAMPLED_CELLS:
            raise BadInput(f'LAT(alpha) samples {" or ".join(SAMPLED_CELLS)} cells, not {cells!r}')
        if m < 1:
            raise BadInput(f'LAT(alpha) needs at least one sample, got M={m}')
        if target_ms is not None and target_ms <= 0:
            raise BadInput(f'target latency must be positive, got {target_ms} ms')
        self.lpm_fn, self.m, self.seed, self.error = lpm_fn, m, seed, error
        self.target_ms, self.dual_lr, self.scale_ms = target_ms, dual_lr, float(scale_ms)
        self.cells = cells
        self.lambda_ = tf.Variable(float(lambda_), trainable=False, name='lambda_')
        self.calls = tf.Variable(0, dtype=tf.int64, trainable=False, name='lat_calls')
        self.last_ms = tf.Variable(0.0, trainable=False, name='lat_ms')
        self.derived_ms = tf.Variable(0.0, trainable=False, name='derived_ms')

    def variables(self):
        """What a checkpoint must hold to resume the term exactly."""
        return {'lambda_': self.lambda_, 'lat_calls': self.calls, 'lat_ms': self.last_ms,
                'derived_ms': self.derived_ms}

    def __call__(self, model):
        self.calls.assign_add(1)
        alphas = [getattr(model, f'alpha_{c}') for c in dataset.CELLS[self.cells]]
        dtype = alphas[0].dtype
        lat = latency(alphas, lambda e: tf.cast(self.lpm_fn(e), dtype), self.m,
                      tf.stack([tf.constant(self.seed, tf.int64), self.calls]), self.error)
        self.last_ms.assign(tf.cast(tf.stop_gradient(lat), tf.float32))
        if self.target_ms is not None:
            self.derived_ms.assign(self._derived_ms(model))
            excess = (self.derived_ms - self.target_ms) / self.target_ms
            self.lambda_.assign(tf.maximum(0.0, self.lambda_ + self.dual_lr * tf.cast(excess, tf.float32)))
            return tf.cast(excess > 0, dtype) * tf.cast(self.lambda_, dtype) * lat / self.scale_ms
        return tf.cast(self.lambda_, dtype) * lat / self.scale_ms

    def _derived_ms(self, model):
        normal, beta_normal, reduce, beta_reduce = model.mixing_weights()
        weights = {'normal': (normal, beta_normal), 'reduce': (reduce, beta_reduce)}
        code = tf.concat([derived_encoding(*weights[c]) for c in dataset.CELLS[self.cells]], axis=0)
        code = tf.stop_gradient(code)[None]
        ms = self.lpm_fn(code) if self.error is None else self.error.static(self.lpm_fn, code)
        return tf.cast(tf.reshape(ms, []), tf.float32)
