"""The architecture-loss terms of the paper: LAT(alpha) (Eq. 2) and the FLOPs-aware baseline (Table 4).

LAT(alpha) = E[LPM(gamma)], gamma ~ S(alpha): per intermediate node 2 of its input edges uniformly,
per kept edge one op drawn from softmax(alpha) over the 7 non-`none` ops. The expectation is the mean
over M sampled sub-networks. The gradient reaches alpha through the samples by a straight-through
encoding: its value is the sampled one-hot 112-bit vector the LPM was trained on, its gradient that of
the op probabilities, so d LAT / d alpha is the average over samples of d LPM / d gamma_m through p.
"""
import numpy as np
import tensorflow as tf

from ladnas_tf import ops, search_space

_NODE_EDGES = [[e for e, (_, j) in enumerate(search_space.EDGES) if j == node + search_space.NUM_INPUTS]
               for node in range(search_space.NUM_NODES)]


def op_probabilities(alpha):
    """softmax over the non-`none` ops of each edge: [14, 7]."""
    return tf.nn.softmax(alpha[:, 1:], axis=-1)


def sample_encodings(alpha, m, seed):
    """M relaxed encodings [m, 112] of sub-networks drawn from S(alpha); `seed` is a stateless seed [2]."""
    seed = tf.convert_to_tensor(seed, tf.int64)
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


def latency(alpha_normal, lpm_fn, m, seed, noise_sigma=0.0):
    """LAT(alpha) in the LPM's unit (ms): the mean prediction over M samples, plus N(0, sigma) noise
    when sigma > 0 (the paper's robustness experiment, Table 3)."""
    predicted = tf.reduce_mean(lpm_fn(sample_encodings(alpha_normal, m, seed)))
    if noise_sigma:
        seed = tf.convert_to_tensor(seed, tf.int64)
        predicted += tf.random.stateless_normal((), seed + [0, 7], stddev=noise_sigma, dtype=predicted.dtype)
    return predicted


def expected_latency_linear(alpha_normal, weights):
    """E[w . gamma] exactly, for a linear latency model w [112]: the test's reference expectation."""
    probs = op_probabilities(alpha_normal)
    w = tf.reshape(tf.cast(weights, probs.dtype), (search_space.NUM_EDGES, search_space.NUM_OPS))[:, 1:]
    keep = np.array([search_space.INPUTS_PER_NODE / (j) for _, j in search_space.EDGES])  # node j has j inputs
    return tf.reduce_sum(keep * tf.reduce_sum(probs * w, axis=-1))


def macs_table(channels, image_size, num_cells, stem_multiplier=3):
    """Per-op MACs (millions) for the normal and the reduction cells of a CIFAR evaluation network,
    summed over the cells of each kind: two [14, 8] tables (edge, op), `none` costing nothing."""
    normal = np.zeros((search_space.NUM_EDGES, search_space.NUM_OPS))
    reduce = np.zeros_like(normal)
    c, hw = channels, image_size
    for i in range(num_cells):
        reduction = i in (num_cells // 3, 2 * num_cells // 3)
        table = reduce if reduction else normal
        if reduction:
            c *= 2
        for e, (src, _) in enumerate(search_space.EDGES):
            stride = 2 if reduction and src < 2 else 1
            size = hw if src < 2 else (hw // 2 if reduction else hw)
            for o, name in enumerate(search_space.PRIMITIVES):
                table[e, o] += ops.op_macs(name, c, size, size, stride) / 1e6
        hw //= 2 if reduction else 1
    return normal, reduce


def genotype_macs(genotype, tables):
    """The MACs (millions) of a discrete genotype's ops in the same tables: its encoding (edge x op
    one-hot) picks its 8 entries of each cell kind's table."""
    return float(sum(np.sum(search_space.encode_cell(cell).reshape(table.shape) * table)
                     for cell, table in ((genotype.normal, tables[0]), (genotype.reduce, tables[1]))))


def flops(alpha_normal, alpha_reduce, tables):
    """FLOPs(alpha): the MACs of every op weighted by softmax(alpha) over all 8 ops, summed (millions)."""
    normal, reduce = (tf.constant(t, alpha_normal.dtype) for t in tables)
    return (tf.reduce_sum(tf.nn.softmax(alpha_normal, -1) * normal)
            + tf.reduce_sum(tf.nn.softmax(alpha_reduce, -1) * reduce))


class LatencyTerm:
    """lambda_ * LAT(alpha_normal) / scale_ms for the architecture loss (paper Eq. 3): a callable(model)
    -> scalar. With scale_ms the latency of a reference network on the target, lambda_ is a weight per
    reference latency: the same lambda_ means the same trade-off on a fast and on a slow device.

    Each call draws fresh sub-networks (a stateless seed advanced per call, so replicas agree and a
    resumed run repeats the same draws). With `target_ms`, lambda_ follows dual ascent on the
    constraint LAT <= target: it grows while the estimate exceeds the target and shrinks (never below
    0) while it is under, so the user states a latency instead of guessing lambda."""

    def __init__(self, lpm_fn, lambda_=0.1, m=20, seed=0, noise_sigma=0.0, target_ms=None, dual_lr=0.05,
                 scale_ms=1.0):
        if m < 1:
            raise ValueError(f'LAT(alpha) needs at least one sample, got M={m}')
        if target_ms is not None and target_ms <= 0:
            raise ValueError(f'target latency must be positive, got {target_ms} ms')
        self.lpm_fn, self.m, self.seed, self.noise_sigma = lpm_fn, m, seed, noise_sigma
        self.target_ms, self.dual_lr, self.scale_ms = target_ms, dual_lr, float(scale_ms)
        self.lambda_ = tf.Variable(float(lambda_), trainable=False, name='lambda_')
        self.calls = tf.Variable(0, dtype=tf.int64, trainable=False, name='lat_calls')
        self.last_ms = tf.Variable(0.0, trainable=False, name='lat_ms')

    def variables(self):
        """What a checkpoint must hold to resume the term exactly."""
        return {'lambda_': self.lambda_, 'lat_calls': self.calls, 'lat_ms': self.last_ms}

    def __call__(self, model):
        self.calls.assign_add(1)
        alpha = model.alpha_normal
        lat = latency(alpha, lambda e: tf.cast(self.lpm_fn(e), alpha.dtype), self.m,
                      tf.stack([tf.constant(self.seed, tf.int64), self.calls]), self.noise_sigma)
        self.last_ms.assign(tf.cast(tf.stop_gradient(lat), tf.float32))
        if self.target_ms is not None:
            excess = (tf.stop_gradient(lat) - self.target_ms) / self.target_ms
            self.lambda_.assign(tf.maximum(0.0, self.lambda_ + self.dual_lr * tf.cast(excess, tf.float32)))
        return tf.cast(self.lambda_, alpha.dtype) * lat / self.scale_ms


class FlopsTerm:
    """eta * FLOPs(alpha) / scale, the FLOPs-aware baseline of the paper's Table 4 (scale: a reference
    network's MACs in the same tables, so that eta and lambda_ weigh costs alike)."""

    def __init__(self, eta, tables, scale=1.0):
        self.eta, self.tables, self.scale = eta, tables, float(scale)

    def __call__(self, model):
        return self.eta * flops(model.alpha_normal, model.alpha_reduce, self.tables) / self.scale
