"""The DARTS / PC-DARTS supernet: every op on every edge, mixed by softmax(alpha) (paper section 3.1).

Built for fast tracing and stepping. A straightforward Keras port (one layer per op per edge, 560
nested layers at 5 cells) spends minutes tracing; here the math is raw TensorFlow ops inside a few
layers, and the edges leaving one node are computed *together*:
  * a MixedOp holds the ops of all E edges that leave one node (E = 4, 4, 3, 2, 1 for nodes 0..4).
    They share the input, so its ReLU, pooling (+ non-affine BN) and identity are computed once;
    the per-edge convolutions run as one depthwise conv over the input tiled E times and one
    block-diagonal matmul for the E pointwise convs;
  * each non-affine BN over E edges is one fused BN over E*C channels (per-channel statistics, so
    exactly E separate BNs);
  * 'none' contributes nothing to the sum and is not computed (its alpha still gets a gradient
    through the softmax).
In a traced step (tf.function) the mixed ops with the same edge count and stride all call one traced
function, for any channel count and resolution, weights and BN statistics passed in as tensors and the
statistics' updates passed out: a 5-cell supernet traces 5 mixed ops and their gradients once, not 25
per pass, and every pass of a step (architecture, weight, the unrolled ones) reuses them. Eagerly each
mixed op computes inline.
The result equals DARTS's search network op for op (PyTorch's padding and stride-2 semantics, see
ops.py); a stride-2 dilated conv is the stride-1 conv of the even pixels, which is the same thing.

PC-DARTS (Xu et al., 2020): with `partial_channels` K > 1 only the first C/K channels of a node go
through the ops, the rest bypass them (2x2 max-pooled at stride 2) and the result is channel-shuffled;
with `edge_normalization` each edge's output is weighted by beta, softmax-normalised over the edges
entering a node. Both are linear, so a node's sum is computed once per node, not once per edge.

Under tf.distribute with several replicas, batch statistics are synchronised (all-reduced) so that N
replicas compute exactly what one replica computes on the same global batch.
"""
import contextlib
import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from ladnas_tf import search_space
from ladnas_tf.bad_input import BadInput
from ladnas_tf.graph import walk
from ladnas_tf.ops import BN_EPSILON, BN_MOMENTUM

_PACKAGE = 'ladnas_tf'
_CONV_OPS = ('sep_conv_3x3', 'sep_conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5')
# Each intermediate node's incoming edges are contiguous in EDGES (node-major order).
_NODE_SEGMENTS = tuple((search_space.EDGES.index((0, j)), search_space.EDGES.index((j - 1, j)) + 1)
                       for j in range(search_space.NUM_INPUTS, search_space.NUM_INPUTS + search_space.NUM_NODES))


def _targets(source):
    """Intermediate nodes that `source` feeds, and the EDGES index of each of those edges."""
    targets = tuple(range(max(source + 1, search_space.NUM_INPUTS),
                          search_space.NUM_INPUTS + search_space.NUM_NODES))
    return targets, tuple(search_space.EDGES.index((source, j)) for j in targets)


def _replicas():
    ctx = tf.distribute.get_replica_context()
    return ctx.num_replicas_in_sync if ctx is not None else 1


_SOURCES = range(search_space.NUM_INPUTS + search_space.NUM_NODES - 1)
_SOURCE_ORDER = [e for source in _SOURCES for e in _targets(source)[1]]  # EDGES indices, source-major
_SOURCE_SIZES = [len(_targets(source)[1]) for source in _SOURCES]

_RECOMPUTING = [False]  # set while a cell's forward pass is re-run for its gradient (trace time)
_DISCARDING = [False]  # set inside discarded_statistics() (trace time)


@contextlib.contextmanager
def discarded_statistics():
    """For forward passes whose BN moving-statistic updates would be thrown away anyway (those inside
    a keras.StatelessScope that nobody reads, as the architecture step's): no moving statistic is
    updated, and in a traced graph the mixed ops do not even read theirs, which saves ~17 variable
    reads and writes per mixed op. What the passes compute (outputs, gradients) is unchanged: in
    training BN normalises with the batch statistics."""
    before, _DISCARDING[0] = _DISCARDING[0], True
    try:
        yield
    finally:
        _DISCARDING[0] = before


@contextlib.contextmanager
def _updates_computed():
    """The module's flags cleared (normalize_batch computes the statistics' updates), then restored."""
    flags = _RECOMPUTING[0], _DISCARDING[0]
    _RECOMPUTING[0] = _DISCARDING[0] = False
    try:
        yield
    finally:
        _RECOMPUTING[0], _DISCARDING[0] = flags


def normalize_batch(x, moving_mean, moving_var, training, scale=None, offset=None):
    """BN over NHWC channels, then `scale` and `offset` (per channel; none for DARTS's non-affine BN).
    In training the batch statistics (synchronised across replicas) normalise, and update the moving
    ones with PyTorch's unbiased variance; otherwise the moving ones are used. Inside a
    keras.StatelessScope the updates are recorded by the scope, not applied. A recomputed forward
    pass (see recompute_cell) normalises alike but leaves the moving statistics alone: the step's
    first pass has updated them once already."""
    channels = x.shape[-1]
    if scale is None:
        scale = tf.ones([channels], x.dtype)
    if offset is None:
        offset = tf.zeros([channels], x.dtype)
    if not training:
        return tf.nn.batch_normalization(x, moving_mean.value, moving_var.value, offset, scale, BN_EPSILON)
    replicas = _replicas()
    if replicas == 1 and x.dtype in (tf.float32, tf.float16, tf.bfloat16):
        # One op normalises and updates the running statistics (unbiased variance, as PyTorch).
        y, mean, var = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, moving_mean.value, moving_var.value, epsilon=BN_EPSILON, is_training=True,
            exponential_avg_factor=1. - BN_MOMENTUM)
        if not (_RECOMPUTING[0] or _DISCARDING[0]):
            moving_mean.assign(mean)
            moving_var.assign(var)
        return y
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), x.dtype)
    sums = [tf.reduce_sum(x, [0, 1, 2]), tf.reduce_sum(tf.square(x), [0, 1, 2]), count]
    if replicas > 1:
        sums = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, sums)
    total, total_sq, count = sums
    mean = total / count
    biased = tf.maximum(total_sq / count - tf.square(mean), 0.)
    unbiased = biased * count / tf.maximum(count - 1., 1.)
    if not (_RECOMPUTING[0] or _DISCARDING[0]):
        moving_mean.assign(BN_MOMENTUM * moving_mean.value + (1. - BN_MOMENTUM) * tf.stop_gradient(mean))
        moving_var.assign(BN_MOMENTUM * moving_var.value + (1. - BN_MOMENTUM) * tf.stop_gradient(unbiased))
    return tf.nn.batch_normalization(x, mean, biased, offset, scale, BN_EPSILON)


def pointwise(x, kernel):
    """A 1x1 conv (kernel (C_in, C_out)): one Einsum op, whose gradient is two (fewer graph nodes
    than reshape-matmul-reshape, as fast)."""
    return tf.einsum('nhwc,cd->nhwd', x, kernel)


def _channels(x):
    """x's last dimension: an int where the static shape knows it, else a tensor (a shared mixed-op
    function is traced for any resolution and channel count)."""
    return x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]


def _shape(x, tail):
    """The shape that reshapes x's dimensions after (N, H, W) to `tail` (one entry may be -1): a
    constant when the static shape is known, else computed from x in three ops."""
    h, w, rest = x.shape[1], x.shape[2], x.shape[3:]
    if h is None or w is None or not rest.is_fully_defined():
        return tf.concat([tf.shape(x)[:3], tail], 0)
    known = math.prod(t for t in tail if t != -1)
    return [-1, h, w, *(rest.num_elements() // known if t == -1 else t for t in tail)]


def _static_even(x):
    _, h, w, c = x.shape
    return None not in (h, w, c) and h % 2 == 0 and w % 2 == 0


def phases(x):
    """(even, odd) pixels, x[:, ::2, ::2] and x[:, 1::2, 1::2] (see subsample)."""
    if not _static_even(x):
        return subsample(x), subsample(tf.slice(x, [0, 1, 1, 0], [-1, -1, -1, -1]))
    _, h, w, c = x.shape
    pairs = tf.reshape(x, [-1, h // 2, 2, w // 2, 2 * c])
    size = [-1, h // 2, 1, w // 2, c]
    even = tf.reshape(tf.slice(pairs, [0, 0, 0, 0, 0], size), [-1, h // 2, w // 2, c])
    odd = tf.reshape(tf.slice(pairs, [0, 0, 1, 0, c], size), [-1, h // 2, w // 2, c])
    return even, odd


def subsample(x):
    """x[:, ::2, ::2], not as a strided slice, whose gradient scatters element by element (~6x slower on
    CPU): for a known even size a slice of a reshape, else a 1x1 average pool at stride 2 (one op for
    any shape, ~15% slower)."""
    if not _static_even(x):
        return tf.nn.avg_pool2d(x, 1, 2, 'VALID')
    _, h, w, c = x.shape
    even = tf.slice(tf.reshape(x, [-1, h // 2, 2, w // 2, 2 * c]), [0, 0, 0, 0, 0], [-1, h // 2, 1, w // 2, c])
    return tf.reshape(even, [-1, h // 2, w // 2, c])


def _depthwise_native(x, kernel, strides=1, padding='SAME', explicit_paddings=()):
    # The op itself: tf.nn.depthwise_conv2d adds a dozen shape constants around it for dilations, and
    # each constant is a node to trace, to differentiate and to instantiate.
    return tf.raw_ops.DepthwiseConv2dNative(input=x, filter=kernel, strides=[1, strides, strides, 1], padding=padding,
                                            explicit_paddings=list(explicit_paddings))


def _dilated_kernel(kernel, dilation):
    """(k, k, C, 1) -> the (d(k-1)+1)^2 kernel with d-1 zeros between taps, for any C."""
    k = kernel.shape[0]
    spread = tf.pad(kernel[:, None, :, None], [[0, 0], [0, dilation - 1], [0, 0], [0, dilation - 1], [0, 0], [0, 0]])
    spread = tf.reshape(spread, [k * dilation, k * dilation, -1, 1])
    size = dilation * (k - 1) + 1
    return tf.slice(spread, [0, 0, 0, 0], [size, size, -1, -1])


def depthwise(x, kernel, strides=1, dilation=1, divisible=None):
    """Depthwise conv with PyTorch's symmetric padding dilation*(k-1)/2 at stride 1 or 2. `divisible`:
    whether height and width are multiples of the dilation (by default, from the static shape)."""
    p = dilation * (kernel.shape[0] - 1) // 2
    if strides == 1:
        if dilation == 1:
            return _depthwise_native(x, kernel)
        if divisible is None:
            h, w = x.shape[1], x.shape[2]
            divisible = not (h is None or w is None or h % dilation or w % dilation)
        if not divisible:  # the plain conv with the kernel's taps spread out (zeros between them)
            return _depthwise_native(x, _dilated_kernel(kernel, dilation))
        # What tf.nn.depthwise_conv2d does for a dilation (the CPU kernel has none), written out: the
        # dilated conv is a plain conv over each of the dilation^2 phases, padded by p (divisible).
        y = tf.space_to_batch_nd(x, [dilation, dilation], [[p, p], [p, p]])
        y = _depthwise_native(y, kernel, padding='VALID')
        return tf.batch_to_space(y, [dilation, dilation], [[0, 0], [0, 0]])
    if strides != 2:
        raise BadInput(f'stride {strides} is not supported')
    if dilation == 1:
        return _depthwise_native(x, kernel, 2, 'EXPLICIT', [0, 0, p, p, p, p, 0, 0])
    if dilation != 2:
        raise BadInput(f'stride 2 with dilation {dilation} is not supported')
    # Taps at 2i + 2t - (k-1) all fall on even pixels: a plain conv over the even pixels.
    return _depthwise_native(subsample(x), kernel)


def max_pool_3x3(x, strides):
    """3x3 max pooling, PyTorch's padding 1 (stride 2: explicit, as padding has no second derivative in TF).
    Its gradient re-runs the pooling: in a traced step the gradient sits in another function than the
    forward pass, and oneDNN only takes over a pool's gradient (~3x faster than TF's own on CPU) when
    the pool it belongs to is in the same graph."""
    if strides > 1:
        x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=x.dtype.min)
    padding = 'VALID' if strides > 1 else 'SAME'

    @tf.custom_gradient
    def pool(x):
        def grad(dy):
            return tf.raw_ops.MaxPoolGrad(orig_input=x, orig_output=tf.nn.max_pool2d(x, 3, strides, padding), grad=dy,
                                          ksize=[1, 3, 3, 1], strides=[1, strides, strides, 1], padding=padding)
        return tf.nn.max_pool2d(x, 3, strides, padding), grad
    return pool(x)


def channel_shuffle(x, groups):
    """PC-DARTS's shuffle: channel g*n + i moves to i*groups + g (PyTorch's view/transpose, in NHWC)."""
    shape = tf.shape(x)
    c = x.shape[-1]
    y = tf.reshape(x, tf.concat([shape[:-1], [groups, c // groups]], 0))
    y = tf.transpose(y, [0, 1, 2, 4, 3])
    return tf.reshape(y, shape)


class _Weights:
    """Weight creation shared by the supernet's layers: PyTorch's default init (uniform with bound
    1/sqrt(fan_in)), seeded per weight, and BN moving statistics."""

    def _init_seeds(self, seed):
        self.seed = seed
        self._seed_count = 0

    def _next_seed(self):
        self._seed_count += 1
        return None if self.seed is None else self.seed * 1009 + self._seed_count

    def _param(self, name, shape, fan_in):
        bound = 1.0 / math.sqrt(fan_in)
        return self.add_weight(shape=shape, name=name, initializer=keras.initializers.RandomUniform(
            -bound, bound, seed=self._next_seed()))

    def _bn_vector(self, name, sizes):
        """The moving means and variances of several BNs in one variable (zeros then ones per BN): a
        traced step reads and updates it as one tensor, not as two per BN."""
        initial = np.concatenate([np.concatenate([np.zeros(n), np.ones(n)]) for n in sizes]).astype(np.float32)
        return self.add_weight(shape=initial.shape, name=name, trainable=False, aggregation='only_first_replica',
                               autocast=False, initializer=lambda shape, dtype=None: tf.constant(initial, dtype))

    def _bn_stats(self, name, channels):
        # Identical on every replica (synchronised BN), so the first replica's value is the value.
        kw = dict(shape=(channels,), trainable=False, aggregation='only_first_replica', autocast=False)
        return (self.add_weight(name=f'{name}_moving_mean', initializer='zeros', **kw),
                self.add_weight(name=f'{name}_moving_var', initializer='ones', **kw))


class _MixedMath:
    """The math of a MixedOp, from its configuration (num_edges, strides) and explicit tensors: what a
    shared mixed-op function traces without holding on to any layer. The channel count and resolution
    come from the tensors, so one trace serves the mixed ops of every cell (`even`: the resolution is
    even, which a dilated conv's fast path needs)."""

    # Kernels are stacked per shape, so the optimiser and the graph see 4 variables, not 14.
    _DW = {3: ('sep_conv_3x3_0', 'sep_conv_3x3_1', 'dil_conv_3x3_0'),
           5: ('sep_conv_5x5_0', 'sep_conv_5x5_1', 'dil_conv_5x5_0')}
    _PW = ('sep_conv_3x3_0', 'sep_conv_3x3_1', 'sep_conv_5x5_0', 'sep_conv_5x5_1', 'dil_conv_3x3_0',
           'dil_conv_5x5_0')

    even = None  # a layer reads its input's static shape

    @classmethod
    def of(cls, num_edges, strides, even):
        math = cls.__new__(cls)
        math.num_edges, math.strides, math.even = num_edges, strides, even
        return math

    def _kernels(self, depthwise_kernels, pointwise_kernels):
        """name -> (depthwise kernel, block-diagonal pointwise kernel), from the stacked kernels."""
        e, c = self.num_edges, _channels(pointwise_kernels)
        dw = {}
        for k, names in self._DW.items():
            dw.update(zip(names, tf.unstack(depthwise_kernels[k])))
        pw = pointwise_kernels
        if e > 1:  # E 1x1 convs over E channel groups = one matmul with the block-diagonal kernel
            pw = tf.expand_dims(pw, 3) * tf.constant(np.eye(e)[None, :, None, :, None], pw.dtype)
        pw = tf.unstack(tf.reshape(pw, [len(self._PW), e * c, e * c]))
        return {name: (dw[name], w) for name, w in zip(self._PW, pw)}

    def _conv_op(self, op, tiled, kernels, norm, scale):
        """sep: (ReLU, dw, pw, BN) twice, the stride in the first; dil: ReLU, dilated dw, pw, BN.
        `tiled` is ReLU(x) repeated once per edge along the channels; the last BN applies `scale`."""
        dilation = 2 if op.startswith('dil') else 1
        sep = op.startswith('sep')
        dw, pw = kernels[f'{op}_0']
        y = norm(pointwise(depthwise(tiled, dw, self.strides, dilation, self.even), pw), f'{op}_0',
                 None if sep else scale)
        if sep:
            dw, pw = kernels[f'{op}_1']
            y = norm(pointwise(depthwise(tf.nn.relu(y), dw, 1), pw), f'{op}_1', scale)
        return y

    def _reduce(self, relu_x, reduce_kernels, norm, scale):
        """FactorizedReduce per edge: conv_a on the even pixels, conv_b on the odd ones, concatenated."""
        kernel_a, kernel_b = tf.unstack(reduce_kernels)
        even, odd = phases(relu_x)
        a, b = pointwise(even, kernel_a), pointwise(odd, kernel_b)
        shape = _shape(a, [self.num_edges, -1])
        both = tf.stack([tf.reshape(a, shape), tf.reshape(b, shape)], axis=-2)
        return norm(tf.reshape(both, _shape(both, [-1])), 'skip_connect', scale)

    def _pool(self, x, kind, norm):
        if kind == 'max':
            y = max_pool_3x3(x, self.strides)
        else:  # average excluding the padding (count_include_pad=False): 'SAME' at stride 1, subsampled
            y = tf.nn.avg_pool2d(x, 3, 1, 'SAME')
            if self.strides > 1:
                y = subsample(y)
        return norm(y, f'{kind}_pool_3x3', None)

    def _forward(self, x, weights, values, stats, training):
        """The math of call() on explicit kernels (values, as _values()) and statistics (name -> (mean,
        var), each with .value and .assign). Reads nothing from self but its configuration."""
        e = self.num_edges
        depthwise_kernels = dict(zip(self._DW, values[:len(self._DW)]))
        pointwise_kernels = values[len(self._DW)]
        # One set of BN scales/offsets per call, not per BN, sized like the statistics of a BN over C
        # channels (a pool's) and over E*C (a conv's) whatever the shape is known to be.
        sized = {1: stats['max_pool_3x3'][0].value, e: stats['sep_conv_3x3_0'][0].value}
        ones = {k: tf.ones_like(v, x.dtype) for k, v in sized.items()}
        zeros = {k: tf.zeros_like(v, x.dtype) for k, v in sized.items()}

        def norm(y, name, scale):
            k = 1 if name.endswith('pool_3x3') else e  # the pools' BNs are over C channels, the rest E*C
            return normalize_batch(y, *stats[name], training, ones[k] if scale is None else scale, zeros[k])

        # Each op's per-edge weight is folded into its last BN as a per-channel scale.
        scales = tf.unstack(tf.reshape(tf.transpose(weights)[:, :, None] * ones[1], [search_space.NUM_OPS, -1]))
        scale = dict(zip(search_space.PRIMITIVES, scales))
        columns = dict(zip(search_space.PRIMITIVES, tf.unstack(tf.transpose(weights)[:, :, None])))
        relu_x = tf.nn.relu(x)
        tiled = tf.tile(relu_x, [1, 1, 1, e]) if e > 1 else relu_x
        kernels = self._kernels(depthwise_kernels, pointwise_kernels)
        per_edge = [self._conv_op(op, tiled, kernels, norm, scale[op]) for op in _CONV_OPS]
        # expand_dims, not [..., None, :]: a strided slice's gradient scatters into a full tensor.
        shared = [tf.expand_dims(self._pool(x, 'max', norm), -2) * columns['max_pool_3x3'],
                  tf.expand_dims(self._pool(x, 'avg', norm), -2) * columns['avg_pool_3x3']]
        if self.strides == 1:
            shared.append(tf.expand_dims(x, -2) * columns['skip_connect'])
        else:
            per_edge.append(self._reduce(relu_x, values[len(self._DW) + 1], norm, scale['skip_connect']))
        shape = _shape(per_edge[0], [e, -1])
        return tf.add_n([tf.reshape(y, shape) for y in per_edge] + shared)


@keras.saving.register_keras_serializable(_PACKAGE)
class MixedOp(_MixedMath, _Weights, layers.Layer):
    """The mixed ops of the `num_edges` edges that leave one node: for edge e, the sum over the 8 ops
    of weights[e, op] * op_e(x), each op_e with its own weights (DARTS's MixedOp, E at a time).
    call(x, weights (E, 8)) -> (N, H', W', E, C); pooling is followed by a non-affine BN as in DARTS."""

    def __init__(self, channels, num_edges, strides=1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.num_edges, self.strides = channels, num_edges, strides
        self._init_seeds(seed)

    def build(self, input_shape):
        e, c = self.num_edges, self.channels
        if input_shape[-1] != c:
            raise BadInput(f'MixedOp expects {c} input channels, got {input_shape[-1]}')
        if self.strides == 2 and c % 2:
            raise BadInput(f'a stride-2 skip connection needs an even channel count, got {c}')
        self.depthwise_kernels = {k: self._param(f'depthwise_{k}x{k}', (len(names), k, k, e * c, 1), k * k)
                                  for k, names in self._DW.items()}
        self.pointwise_kernels = self._param('pointwise', (len(self._PW), e, c, c), c)
        self.bn_widths = {name: e for name in self._PW}  # each BN's channels, in units of C
        self.bn_widths.update({'max_pool_3x3': 1, 'avg_pool_3x3': 1})
        if self.strides == 2:  # skip_connect is FactorizedReduce: two 1x1 convs to C/2 each, per edge
            self.reduce_kernels = self._param('factorized_reduce', (2, c, e * c // 2), c)
            self.bn_widths['skip_connect'] = e
        self.statistics = self._bn_vector('bn_statistics', [k * c for k in self.bn_widths.values()])

    def _values(self):
        """The kernels as tensors (substituted ones inside a keras.StatelessScope), in _forward's order."""
        kernels = [self.depthwise_kernels[k] for k in self._DW] + [self.pointwise_kernels]
        if self.strides == 2:
            kernels.append(self.reduce_kernels)
        return [tf.convert_to_tensor(v.value) for v in kernels]

    def call(self, x, weights, training=None):
        """-> the E edges' outputs, (N, H', W', E, C)."""
        weights = tf.cast(weights, x.dtype)
        discard = training and _DISCARDING[0]
        if discard:  # a stand-in: in training the statistics only feed the updates, which are dropped
            stats = tf.zeros(self.statistics.shape, self.statistics.dtype)
        else:
            stats = self.statistics.value
        args = [x, weights, *self._values(), stats]
        if tf.executing_eagerly() or _replicas() > 1:
            out, updated = _statistics_io(self._forward, self.bn_widths, training)(*args)
        else:
            # In a graph, every MixedOp of one kind calls one traced function (and its one traced
            # gradient): the weights and statistics go in as tensors, the statistics' updates come out.
            out, updated = _shared_mixed_op(self, args, bool(training))(*args)
            n, h, w, _ = x.shape
            out.set_shape([n, h and -(-h // self.strides), w and -(-w // self.strides), self.num_edges,
                           self.channels])
        if training and not _RECOMPUTING[0] and not discard:
            self.statistics.assign(updated)
        return out

    def get_config(self):
        return {**super().get_config(), 'channels': self.channels, 'num_edges': self.num_edges,
                'strides': self.strides, 'seed': self.seed}


class _Statistic:
    """A BN moving statistic inside a shared mixed-op function: its value comes in as a tensor, its
    update is kept (as .new) to come out."""

    def __init__(self, value):
        self.value, self.new = value, value

    def assign(self, value):
        self.new = value


def _statistics_io(forward, widths, training, traced=False):
    """fn(x, weights, *kernels, statistics) -> (out, updated statistics) around
    forward(x, weights, kernels, stats, training): the BN statistics of a mixed op as one vector, per BN
    its moving mean then variance (`widths`: BN name -> channels in units of x's, in order). `traced`: for the shared
    function, whose one trace serves every context, so it always computes the updates (the caller keeps
    them or not); it clears the module's flags while tracing, which only one thread does (replicas == 1).
    Called directly, the flags stand: replica threads read them concurrently."""
    names = list(widths)

    def fn(x, weights, *tensors):
        values = tensors[:-1]
        units = [widths[name] for name in names for _ in range(2)]
        c = _channels(x)
        sizes = [u * c for u in units] if isinstance(c, int) else tf.constant(units) * c
        parts = tf.split(tensors[-1], sizes, num=len(units))
        stats = {name: (_Statistic(parts[2 * i]), _Statistic(parts[2 * i + 1])) for i, name in enumerate(names)}
        with _updates_computed() if traced else contextlib.nullcontext():
            out = forward(x, weights, values, stats, training)
        return out, tf.stop_gradient(tf.concat([s.new for name in names for s in stats[name]], 0))
    return fn


# (edges, strides, dtype, even resolution, training) -> the traced mixed-op function
_SHARED_MIXED_OPS = {}


def _shared_mixed_op(op, args, training):
    """One traced function per mixed-op kind (edges, stride, dtype, even size), called by every MixedOp
    of that kind, in every step function: it computes op._forward from tensors only, so it captures
    nothing of one layer.
    fn(x, weights, *kernels, statistics) -> (out, updated statistics), the statistics as op.statistics
    holds them (_statistics_io); `args` are such arguments."""
    even = _static_even(args[0])  # an unknown size takes the general path
    key = (op.num_edges, op.strides, args[0].dtype.name, even, training)
    fn = _SHARED_MIXED_OPS.get(key)
    if fn is not None:
        return fn
    forward = _statistics_io(_MixedMath.of(op.num_edges, op.strides, even)._forward, op.bn_widths, training,
                             traced=True)
    # Any batch, resolution and channel count (tracing is most of a step's start-up): the kernels' and
    # statistics' sizes that follow the channels are left open too; the edges and kernel sizes are not.
    x, weights, *kernels, stats = args
    open_dims = [(3,)] * len(op._DW) + [(2, 3), (1, 2)]  # depthwise, pointwise, factorized reduce
    signature = [tf.TensorSpec([None] * 4, x.dtype), tf.TensorSpec(weights.shape, weights.dtype)]
    signature += [tf.TensorSpec([None if i in dims else d for i, d in enumerate(t.shape)], t.dtype)
                  for t, dims in zip(kernels, open_dims)]
    signature.append(tf.TensorSpec([None], stats.dtype))
    fn = tf.function(forward, autograph=False).get_concrete_function(*signature)
    _SHARED_MIXED_OPS[key] = fn
    return fn


@keras.saving.register_keras_serializable(_PACKAGE)
class SearchCell(_Weights, layers.Layer):
    """DARTS's search cell: preprocess both inputs to C channels (non-affine), 4 nodes each summing
    its mixed edges from every earlier node, output the concat of the 4 nodes (4C channels).
    call([s0, s1], op_weights (14, 8), edge_weights (14,) or None)."""

    def __init__(self, channels, reduction, reduction_prev, partial_channels=1, seed=None, recompute=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.recompute = recompute
        if channels % partial_channels:
            raise BadInput(f'channels {channels} are not divisible by partial_channels {partial_channels}')
        self.channels, self.reduction, self.reduction_prev = channels, reduction, reduction_prev
        self.partial_channels = partial_channels
        self._init_seeds(seed)
        op_channels = channels // partial_channels
        self.mixed = []
        for source in range(search_space.NUM_INPUTS + search_space.NUM_NODES - 1):
            strides = walk.input_stride(source, reduction)
            self.mixed.append(MixedOp(op_channels, len(_targets(source)[0]), strides,
                                      seed=None if seed is None else seed + 101 * (source + 1),
                                      dtype=self.dtype_policy, name=f'mixed_{source}'))

    def build(self, input_shape):
        (c_pp, c_p), c = (s[-1] for s in input_shape), self.channels
        if self.reduction_prev:  # FactorizedReduce(C_pp -> C), non-affine
            self.pre0 = self._param('pre0', (2, c_pp, c // 2), c_pp)
        else:  # ReLU, 1x1 conv, non-affine BN
            self.pre0 = self._param('pre0', (c_pp, c), c_pp)
        self.pre1 = self._param('pre1', (c_p, c), c_p)
        self.pre_stats = [self._bn_stats('pre0', c), self._bn_stats('pre1', c)]
        op_channels = c // self.partial_channels
        for source, op in enumerate(self.mixed):
            op.build((None, None, None, op_channels))

    def _preprocess(self, s0, s1, training):
        r0 = tf.nn.relu(s0)
        if self.reduction_prev:
            even, odd = phases(r0)
            kernel_a, kernel_b = tf.unstack(self.pre0.value)
            y0 = tf.concat([pointwise(even, kernel_a), pointwise(odd, kernel_b)], -1)
        else:
            y0 = pointwise(r0, self.pre0.value)
        y1 = pointwise(tf.nn.relu(s1), self.pre1.value)
        return (normalize_batch(y0, *self.pre_stats[0], training), normalize_batch(y1, *self.pre_stats[1], training))

    def call(self, inputs, op_weights, edge_weights=None, training=None):
        states = list(self._preprocess(*inputs, training))
        k = self.partial_channels
        op_channels = self.channels // k
        mixed_sums = {j: [] for j in range(search_space.NUM_INPUTS, search_space.NUM_INPUTS + search_space.NUM_NODES)}
        bypass_sums = {j: [] for j in mixed_sums}
        if edge_weights is not None:  # beta scales the whole edge, so it folds into the op weights
            op_weights = op_weights * edge_weights[:, None]
        # The rows of each source's edges, in source order: one gather and one split for the cell.
        per_source = tf.split(tf.gather(op_weights, _SOURCE_ORDER), _SOURCE_SIZES)
        for source, op in enumerate(self.mixed):
            x = states[source]
            targets, edges = _targets(source)
            weights = per_source[source]
            if k > 1:
                x, bypass = tf.split(x, [op_channels, x.shape[-1] - op_channels], axis=-1)
            if self.recompute and training:
                out = recompute(lambda x, w, op=op: op(x, w, training=training), x, weights)
            else:
                out = op(x, weights, training=training)
            out = tf.unstack(out, axis=-2)
            for t, j in enumerate(targets):
                mixed_sums[j].append(out[t])
            if k > 1:
                if op.strides > 1:
                    bypass = tf.nn.max_pool2d(bypass, 2, 2, 'SAME')
                for t, j in enumerate(targets):
                    beta = 1.0 if edge_weights is None else tf.cast(edge_weights[edges[t]], x.dtype)
                    bypass_sums[j].append(bypass * beta)
            node = source + 1
            if node >= search_space.NUM_INPUTS:  # every edge into `node` is now summed
                total = tf.add_n(mixed_sums[node])
                if k > 1:
                    total = channel_shuffle(tf.concat([total, tf.add_n(bypass_sums[node])], -1), k)
                states.append(total)
        return tf.concat(states[search_space.NUM_INPUTS:], axis=-1)

    def get_config(self):
        return {**super().get_config(), 'channels': self.channels, 'reduction': self.reduction,
                'reduction_prev': self.reduction_prev, 'partial_channels': self.partial_channels,
                'seed': self.seed, 'recompute': self.recompute}


def recompute(fn, *inputs):
    """fn(*inputs) keeping only its inputs for the backward pass, which runs fn again under a tape
    (gradient checkpointing): the dozens of intermediate tensors of a mixed op then live one op at a
    time instead of all at once, for one more forward pass per step. fn's variables get gradients."""
    # In a tf.function the backward graph then references only the inputs, so the executor frees the
    # first pass's intermediates as soon as they are consumed.
    @tf.custom_gradient
    def checkpointed(*inputs):
        def grad(dy, variables=None):
            variables = list(variables or [])
            # Depending on dy keeps TF's graph optimiser from merging the two passes (CSE).
            with tf.control_dependencies([dy]):
                again_inputs = [tf.identity(x) for x in inputs]
            _RECOMPUTING[0] = True
            try:
                with tf.GradientTape() as tape:
                    tape.watch(again_inputs + variables)
                    again = fn(*again_inputs)
            finally:
                _RECOMPUTING[0] = False
            grads = tape.gradient(again, again_inputs + variables, output_gradients=dy)
            return grads[:len(inputs)], grads[len(inputs):]
        return fn(*inputs), grad
    return checkpointed(*inputs)


def normalize_edges(beta):
    """PC-DARTS's edge normalisation: softmax of beta over the edges entering each node."""
    return tf.concat([tf.nn.softmax(beta[a:b]) for a, b in _NODE_SEGMENTS], axis=0)


def derive_cell(op_weights, edge_weights=None):
    """DARTS's parse(): per node the 2 incoming edges with the strongest non-none op (edge weights
    multiplied in for PC-DARTS), each with its strongest non-none op. Strongest edge first."""
    w = np.array(op_weights, dtype=np.float64)
    if edge_weights is not None:
        w = w * np.asarray(edge_weights, dtype=np.float64)[:, None]
    none = search_space.PRIMITIVES.index('none')
    cell = []
    for a, b in _NODE_SEGMENTS:
        rows = w[a:b]
        best = lambda i: max(rows[i][k] for k in range(search_space.NUM_OPS) if k != none)
        for i in sorted(range(b - a), key=lambda i: -best(i))[:search_space.INPUTS_PER_NODE]:
            op = max((k for k in range(search_space.NUM_OPS) if k != none), key=lambda k: (rows[i][k], -k))
            cell.append((search_space.PRIMITIVES[op], i))
    return tuple(cell)


@keras.saving.register_keras_serializable(_PACKAGE)
class Supernet(_Weights, keras.Model):
    """DARTS's search network: a 3x3 conv stem to 3C (affine BN), `layers` search cells with
    reductions at 1/3 and 2/3 of the depth, global pooling, a linear classifier.

    The architecture parameters alpha_normal, alpha_reduce (14 x 8, 1e-3 N(0, 1)) and, with edge
    normalisation, beta_normal, beta_reduce (14) are kept apart from the network weights:
    arch_parameters() vs weight_parameters()."""

    def __init__(self, channels=16, layers=8, num_classes=10, partial_channels=1, edge_normalization=False,
                 seed=None, recompute=False, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.num_layers, self.num_classes = channels, layers, num_classes
        self.recompute = recompute
        self.partial_channels, self.edge_normalization = partial_channels, edge_normalization
        self._init_seeds(seed)
        plans = walk.cell_plans('cifar', channels, layers)  # DARTS searches with the CIFAR stem and cells
        self.reductions = tuple(plan.index for plan in plans if plan.reduction)
        self.cells_ = [SearchCell(plan.c, plan.reduction, plan.reduction_prev, partial_channels,
                                  seed=None if seed is None else seed + 7919 * (plan.index + 1), recompute=recompute,
                                  dtype=self.dtype_policy, name=f'cell_{plan.index}')
                       for plan in plans]
        self.out_channels = plans[-1].c * search_space.NUM_NODES

    def build(self, input_shape):
        h, w, c_in = input_shape[1], input_shape[2], input_shape[-1]
        factor = 2 ** len(self.reductions)
        if h is not None and (h % factor or w % factor):
            raise BadInput(f'image size {h}x{w} must be divisible by {factor} for {len(self.reductions)} '
                             'reduction cells')
        stem = 3 * self.channels
        self.stem_kernel = self._param('stem_kernel', (3, 3, c_in, stem), 9 * c_in)
        self.stem_gamma = self.add_weight(shape=(stem,), initializer='ones', name='stem_gamma')
        self.stem_beta = self.add_weight(shape=(stem,), initializer='zeros', name='stem_beta')
        self.stem_stats = self._bn_stats('stem', stem)
        c_pp = c_p = stem
        for cell in self.cells_:
            cell.build(((None, None, None, c_pp), (None, None, None, c_p)))
            c_pp, c_p = c_p, cell.channels * search_space.NUM_NODES
        self.classifier_kernel = self._param('classifier_kernel', (c_p, self.num_classes), c_p)
        self.classifier_bias = self._param('classifier_bias', (self.num_classes,), c_p)
        arch = lambda name, shape: self.add_weight(shape=shape, name=name, initializer=keras.initializers.RandomNormal(
            stddev=1e-3, seed=self._next_seed()))
        shape = (search_space.NUM_EDGES, search_space.NUM_OPS)
        self.alpha_normal, self.alpha_reduce = arch('alpha_normal', shape), arch('alpha_reduce', shape)
        self.beta_normal = self.beta_reduce = None
        if self.edge_normalization:
            self.beta_normal = arch('beta_normal', (search_space.NUM_EDGES,))
            self.beta_reduce = arch('beta_reduce', (search_space.NUM_EDGES,))

    def arch_parameters(self):
        """alpha (and beta): what the architecture optimiser updates."""
        extra = [self.beta_normal, self.beta_reduce] if self.edge_normalization else []
        return [self.alpha_normal, self.alpha_reduce] + extra

    def weight_parameters(self):
        """The network weights: every trainable weight but alpha and beta."""
        arch = set(id(v) for v in self.arch_parameters())
        return [v for v in self.trainable_weights if id(v) not in arch]

    def mixing_weights(self):
        """(softmax(alpha_normal), normalised beta_normal or None, same for the reduction cells)."""
        normal, reduce = tf.nn.softmax(self.alpha_normal.value), tf.nn.softmax(self.alpha_reduce.value)
        if not self.edge_normalization:
            return normal, None, reduce, None
        return normal, normalize_edges(self.beta_normal.value), reduce, normalize_edges(self.beta_reduce.value)

    def call(self, x, training=None):
        normal, beta_normal, reduce, beta_reduce = self.mixing_weights()
        s = tf.nn.conv2d(x, self.stem_kernel.value, 1, 'SAME')
        s = normalize_batch(s, *self.stem_stats, training, self.stem_gamma.value, self.stem_beta.value)
        s0 = s1 = s
        for cell in self.cells_:
            weights = (reduce, beta_reduce) if cell.reduction else (normal, beta_normal)
            s0, s1 = s1, cell([s0, s1], *weights, training=training)
        pooled = tf.reduce_mean(s1, axis=[1, 2])
        return tf.matmul(pooled, self.classifier_kernel.value) + self.classifier_bias.value

    def genotype(self):
        """The discrete genotype of the current alpha (and beta): DARTS's parse() per cell type."""
        normal, beta_normal, reduce, beta_reduce = (None if t is None else np.asarray(t)
                                                    for t in self.mixing_weights())
        return search_space.make_genotype(derive_cell(normal, beta_normal), derive_cell(reduce, beta_reduce))

    def get_config(self):
        return {'channels': self.channels, 'layers': self.num_layers, 'num_classes': self.num_classes,
                'partial_channels': self.partial_channels, 'edge_normalization': self.edge_normalization,
                'seed': self.seed, 'recompute': self.recompute, 'name': self.name}


def build_supernet(channels=16, layers=8, num_classes=10, image_size=32, partial_channels=1,
                   edge_normalization=False, seed=None, in_channels=3, dtype=None, recompute=False):
    """A built supernet (weights created) for square images of `image_size`."""
    model = Supernet(channels, layers, num_classes, partial_channels, edge_normalization, seed=seed, dtype=dtype,
                     recompute=recompute)
    model.build((None, image_size, image_size, in_channels))
    return model
