"""An evaluation network as plain TensorFlow ops with random constant weights, for profiling.

Latency does not depend on weight values, so the profiler needs no Keras objects: emitting the same
graph as ladnas_tf.network with constants traces in a fraction of a second and converts to TFLite
~10x faster than the Keras model (no variables to freeze, no layer machinery). Every function here
mirrors one layer of ops.py / network.py; tests/test_latency_graph.py checks that the converted ops
are those of the Keras network's conversion, op for op.
"""
import math

import numpy as np
import tensorflow as tf

from ladnas_tf import search_space


class _Emitter:
    """Emits ops with weights drawn from one seeded generator."""

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

    def relu_conv_bn(self, x, filters, k=1, stride=1):
        return self.bn(self.conv(tf.nn.relu(x), filters, k, stride))

    def dil_conv(self, x, filters, k, stride, dilation):
        x = self.conv(tf.nn.relu(x), None, k, stride, dilation, depthwise=True)
        return self.bn(self.conv(x, filters, 1))

    def sep_conv(self, x, filters, k, stride):
        return self.dil_conv(self.dil_conv(x, filters, k, stride, 1), filters, k, 1, 1)

    def factorized_reduce(self, x, filters):
        x = tf.nn.relu(x)
        y = tf.concat([self.conv(x, filters // 2, 1, 2), self.conv(x[:, 1:, 1:, :], filters // 2, 1, 2)], -1)
        return self.bn(y)

    def pool(self, x, kind, stride):
        y = (tf.nn.max_pool2d if kind == 'max' else tf.nn.avg_pool2d)(x, 3, 1, 'SAME')
        return y[:, ::stride, ::stride, :] if stride > 1 else y

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
            states.append(sum(self.op(op, states[i], c, 2 if reduction and i < 2 else 1) for op, i in pair))
        return tf.concat([states[i] for i in search_space.CONCAT], -1)

    def network(self, x, genotype, setting, channels, num_cells, num_classes):
        """network.NetworkCIFAR / NetworkImageNet in inference (no auxiliary head, no drop-path)."""
        c = channels
        if setting == 'cifar':
            s0 = s1 = self.bn(self.conv(x, 3 * c, 3))
            reduction_prev = False
        else:
            s0 = self.bn(self.conv(tf.nn.relu(self.bn(self.conv(x, c // 2, 3, 2))), c, 3, 2))
            s1 = self.relu_conv_bn(s0, c, 3, 2)
            reduction_prev = True
        for i in range(num_cells):
            reduction = i in (num_cells // 3, 2 * num_cells // 3)
            c *= 2 if reduction else 1
            s0, s1 = s1, self.cell(s0, s1, genotype.reduce if reduction else genotype.normal,
                                   c, reduction, reduction_prev)
            reduction_prev = reduction
        pooled = tf.reduce_mean(s1, axis=[1, 2])
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
    return tf.lite.TFLiteConverter.from_concrete_functions([fn]).convert(), params, macs
