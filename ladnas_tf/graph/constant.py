"""The genotype walk emitted as plain TensorFlow ops with random constant weights, for profiling.

Latency does not depend on weight values, so the profiler needs no Keras objects: emitting the same
graph as ladnas_tf.network with constants traces in a fraction of a second and converts to TFLite
~10x faster than the Keras model (no variables to freeze, no layer machinery). Every primitive mirrors
one layer of ops.py / network.py; tests/test_graph_constant.py checks that the converted ops are
those of the Keras network's conversion, op for op.
"""
import math

import numpy as np
import tensorflow as tf

from ladnas_tf.bad_input import BadInput
from ladnas_tf.graph import convert
from ladnas_tf.graph.macs import network_macs
from ladnas_tf.graph.walk import Walk


class GraphError(BadInput):
    """Input the constant graph cannot be converted with; the message is one line."""


class ConstantEmitter(Walk):
    """The walk as TF ops with weights drawn from one seeded generator."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.params = 0  # counted as network.py counts them (BN's scale and offset included)

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
        return y[:, ::stride, ::stride, :] if stride > 1 and dilation > 1 else y

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
        return tf.nn.bias_add(tf.matmul(pooled, self._weight(pooled.shape[-1], num_classes)),
                              self._weight(num_classes))


def concrete_function(genotype, setting='cifar', channels=36, num_cells=20, num_classes=10,
                      image_size=32, batch_size=1, seed=0):
    """(the network as a traced tf.function with a static input shape, params, MACs per image).

    The batch is static: a dynamic one leaves dilated convs as SPACE_TO_BATCH_ND in TFLite."""
    emitter = ConstantEmitter(seed)
    walked = (genotype, setting, channels, num_cells, num_classes, image_size)
    fn = tf.function(lambda x: emitter.network(x, *walked),
                     autograph=False)  # plain Python control flow: autograph only slows tracing
    concrete = fn.get_concrete_function(tf.TensorSpec((batch_size, image_size, image_size, 3), tf.float32))
    return concrete, emitter.params, network_macs(*walked)


def genotype_to_tflite(genotype, **setting):
    """(TFLite float32 flatbuffer converted from the constant graph, params, MACs per image)."""
    fn, params, macs = concrete_function(genotype, **setting)
    return convert.concrete_to_tflite(fn), params, macs


def genotype_to_tflite_int8(genotype, representative=None, **setting):
    """(TFLite flatbuffer of the constant graph with full-integer post-training quantization, params,
    MACs per image): int8 weights and activations, float32 input and output, as export.py's int8.

    representative: calibration images, N x image_size x image_size x 3 with N >= batch_size (default:
    CALIBRATION_BATCHES batches of seeded random images: with random weights the int8 ranges only need
    to be plausible, since the file is timed, never evaluated)."""
    fn, params, macs = concrete_function(genotype, **setting)
    batch, size = fn.inputs[0].shape[0], fn.inputs[0].shape[1]
    if representative is None:
        representative = convert.random_images(convert.CALIBRATION_BATCHES * batch, size)
    shape = np.shape(representative)
    if len(shape) != 4 or tuple(shape[1:]) != (size, size, 3) or shape[0] < batch:
        raise GraphError(f'representative images must be N x {size} x {size} x 3 with N >= {batch} '
                         f'(the batch size), got shape {tuple(shape)}')
    feed = convert.calibration_feed([representative], size, batch)
    return convert.concrete_to_tflite(fn, feed), params, macs
