"""An evaluation network as a walk over its genotype, and that walk emitted as plain TensorFlow ops
with random constant weights, for profiling.

`Walk` is the one genotype-to-graph description outside the Keras layers: stem, cells, ops and
classifier in terms of a few primitives (conv, bn, relu, pool, shift, add, concat, classifier) that
an emitter implements. Two emitters exist: `_Emitter` below (constant TF ops) and qat.py's (standard
tf_keras layers, for quantization-aware training), so neither repeats the network's structure.

Latency does not depend on weight values, so the profiler needs no Keras objects: emitting the same
graph as ladnas_tf.network with constants traces in a fraction of a second and converts to TFLite
~10x faster than the Keras model (no variables to freeze, no layer machinery). Every method mirrors
one layer of ops.py / network.py; tests/test_latency_graph.py checks that the converted ops are
those of the Keras network's conversion, op for op.
"""
import contextlib
import logging
import math
import warnings

import numpy as np
import tensorflow as tf

from ladnas_tf import search_space
from ladnas_tf.bad_input import BadInput

CALIBRATION_BATCHES = 4  # int8 calibration of the constant graph: a few seeded random batches


class GraphError(BadInput):
    """Input the constant graph cannot be converted with; the message is one line."""


class Walk:
    """network.NetworkCIFAR / NetworkImageNet in inference (no auxiliary head, no drop-path), walked
    in the order the Keras network creates its layers, so weighted primitives meet its weighted
    layers one for one (qat.py copies weights that way).

    Primitives: conv(x, filters, k, stride, dilation, depthwise) with PyTorch's padding (ops.py),
    bn(x), relu(x), pool(x, 'max'|'avg', stride), shift(x) (drop the first row and column),
    add(iterable), concat(list) on channels, classifier(x, num_classes) (global mean, then dense)."""

    def relu_conv_bn(self, x, filters, k=1, stride=1):
        return self.bn(self.conv(self.relu(x), filters, k, stride))

    def dil_conv(self, x, filters, k, stride, dilation):
        x = self.conv(self.relu(x), None, k, stride, dilation, depthwise=True)
        return self.bn(self.conv(x, filters, 1))

    def sep_conv(self, x, filters, k, stride):
        return self.dil_conv(self.dil_conv(x, filters, k, stride, 1), filters, k, 1, 1)

    def factorized_reduce(self, x, filters):
        x = self.relu(x)
        return self.bn(self.concat([self.conv(x, filters // 2, 1, 2),
                                    self.conv(self.shift(x), filters // 2, 1, 2)]))

    def op(self, name, x, c, stride):
        if name == 'skip_connect':
            return x if stride == 1 else self.factorized_reduce(x, c)
        if name in ('max_pool_3x3', 'avg_pool_3x3'):
            return self.pool(x, name[:3], stride)
        k = int(name[-1])
        return self.sep_conv(x, c, k, stride) if name.startswith('sep') else self.dil_conv(x, c, k, stride, 2)

    def cell(self, s0, s1, cell, c, reduction, reduction_prev):
        states = [self.factorized_reduce(s0, c) if reduction_prev else self.relu_conv_bn(s0, c),
                  self.relu_conv_bn(s1, c)]
        for node in range(search_space.NUM_NODES):
            pair = cell[2 * node:2 * node + 2]
            states.append(self.add(self.op(op, states[i], c, 2 if reduction and i < 2 else 1)
                                   for op, i in pair))
        return self.concat([states[i] for i in search_space.CONCAT])

    def network(self, x, genotype, setting, channels, num_cells, num_classes):
        c = channels
        if setting == 'cifar':
            s0 = s1 = self.bn(self.conv(x, 3 * c, 3))
            reduction_prev = False
        else:
            s0 = self.bn(self.conv(self.relu(self.bn(self.conv(x, c // 2, 3, 2))), c, 3, 2))
            s1 = self.relu_conv_bn(s0, c, 3, 2)
            reduction_prev = True
        for i in range(num_cells):
            reduction = i in (num_cells // 3, 2 * num_cells // 3)
            c *= 2 if reduction else 1
            s0, s1 = s1, self.cell(s0, s1, genotype.reduce if reduction else genotype.normal,
                                   c, reduction, reduction_prev)
            reduction_prev = reduction
        return self.classifier(s1, num_classes)


class _Emitter(Walk):
    """The walk as TF ops with weights drawn from one seeded generator."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.params = 0  # counted as network.py counts them (BN's scale and offset included)
        self.macs = 0    # convolutions and the classifier, at the strides the network defines

    def _weight(self, *shape):
        self.params += math.prod(shape)
        return tf.constant(self.rng.normal(0, 0.1, shape).astype(np.float32))

    def bn(self, x):
        # Inference BN is a per-channel affine map; the converter folds it into the preceding conv.
        c = x.shape[-1]
        return x * self._weight(c) + self._weight(c)

    def conv(self, x, filters, k, stride=1, dilation=1, depthwise=False):
        """ops.conv_layers: PyTorch's symmetric padding at stride 2 (see ops.py)."""
        pad = dilation * (k - 1) // 2
        if stride > 1 and dilation == 1 and pad:
            x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        padding = 'VALID' if stride > 1 and dilation == 1 else 'SAME'
        conv_stride = stride if dilation == 1 else 1
        c = x.shape[-1]
        if depthwise:
            y = tf.nn.depthwise_conv2d(x, self._weight(k, k, c, 1), [1, conv_stride, conv_stride, 1],
                                       padding, dilations=[dilation, dilation])
        else:
            y = tf.nn.convolution(x, self._weight(k, k, c, filters), conv_stride, padding,
                                  dilations=dilation)
        y = y[:, ::stride, ::stride, :] if stride > 1 and dilation > 1 else y
        self.macs += math.prod(y.shape[1:3]) * k * k * c * (1 if depthwise else filters)
        return y

    def relu(self, x):
        return tf.nn.relu(x)

    def pool(self, x, kind, stride):
        y = (tf.nn.max_pool2d if kind == 'max' else tf.nn.avg_pool2d)(x, 3, 1, 'SAME')
        return y[:, ::stride, ::stride, :] if stride > 1 else y

    def shift(self, x):
        return x[:, 1:, 1:, :]

    def add(self, xs):
        return sum(xs)  # from 0 and lazily, as network.Cell sums: the Keras network's very graph

    def concat(self, xs):
        return tf.concat(xs, -1)

    def classifier(self, x, num_classes):
        pooled = tf.reduce_mean(x, axis=[1, 2])
        self.macs += pooled.shape[-1] * num_classes
        return tf.nn.bias_add(tf.matmul(pooled, self._weight(pooled.shape[-1], num_classes)),
                              self._weight(num_classes))


def concrete_function(genotype, setting='cifar', channels=36, num_cells=20, num_classes=10,
                      image_size=32, batch_size=1, seed=0):
    """(the network as a traced tf.function with a static input shape, params, MACs per image).

    The batch is static: a dynamic one leaves dilated convs as SPACE_TO_BATCH_ND in TFLite."""
    emitter = _Emitter(seed)
    fn = tf.function(lambda x: emitter.network(x, genotype, setting, channels, num_cells, num_classes),
                     autograph=False)  # plain Python control flow: autograph only slows tracing
    concrete = fn.get_concrete_function(tf.TensorSpec((batch_size, image_size, image_size, 3), tf.float32))
    return concrete, emitter.params, emitter.macs // batch_size


def to_tflite(genotype, **setting):
    """(TFLite float32 flatbuffer converted from the constant graph, params, MACs per image)."""
    fn, params, macs = concrete_function(genotype, **setting)
    with quiet_converter():
        return tf.lite.TFLiteConverter.from_concrete_functions([fn]).convert(), params, macs


def calibration_images(count, image_size, seed=0):
    """Seeded standard-normal images (the scale of normalised inputs): with random weights the int8
    ranges only need to be plausible, since the file is timed, never evaluated."""
    return np.random.default_rng(seed).standard_normal((count, image_size, image_size, 3)).astype(np.float32)


def to_tflite_int8(genotype, representative=None, **setting):
    """(TFLite flatbuffer of the constant graph with full-integer post-training quantization, params,
    MACs per image): int8 weights and activations, float32 input and output, as export.py's int8.

    representative: calibration images, N x image_size x image_size x 3 with N >= batch_size
    (default: CALIBRATION_BATCHES batches of seeded random images)."""
    fn, params, macs = concrete_function(genotype, **setting)
    batch, size = fn.inputs[0].shape[0], fn.inputs[0].shape[1]
    if representative is None:
        representative = calibration_images(CALIBRATION_BATCHES * batch, size)
    shape = np.shape(representative)
    if len(shape) != 4 or tuple(shape[1:]) != (size, size, 3) or shape[0] < batch:
        raise GraphError(f'representative images must be N x {size} x {size} x 3 with N >= {batch} '
                         f'(the batch size), got shape {tuple(shape)}')
    images = np.asarray(representative, np.float32)

    def feed():
        for start in range(0, len(images) - batch + 1, batch):
            yield [images[start:start + batch]]
    with quiet_converter():
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = feed
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert(), params, macs


@contextlib.contextmanager
def quiet_converter():
    """Mutes the TFLite converter's per-model notes. A frozen or constant function holds no variables,
    so the converter needs no trackable object (given one, it first saves a SavedModel, several times
    slower): its absl warning asking for one is noise; and float input and output stay float, so the
    "no statistics for quantized inputs" note is moot."""
    logger = logging.getLogger('absl')  # the TFLite converter logs through absl
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='Statistics for quantized inputs')
            yield
    finally:
        logger.setLevel(level)
