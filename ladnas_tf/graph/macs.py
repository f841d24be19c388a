"""Multiply-adds of an evaluation network, by walking its genotype over map shapes.

Convolutions and the classifier only (no BN, ReLU, pooling, additions), as the network is *defined*:
a stride-2 op counts its stride-2 outputs, even where it is computed as the stride-1 op subsampled
(ops.py), the convention of the DARTS papers.
"""
import math

from ladnas_tf.graph.walk import Walk


class MacCounter(Walk):
    """The walk on (height, width, channels) shapes, summing multiply-adds in `macs`."""

    def __init__(self):
        self.macs = 0

    def conv(self, x, filters, k, stride=1, dilation=1, depthwise=False):
        h, w, c = x
        out = (math.ceil(h / stride), math.ceil(w / stride), c if depthwise else filters)
        self.macs += out[0] * out[1] * k * k * c * (1 if depthwise else filters)
        return out

    def bn(self, x):
        return x

    def relu(self, x):
        return x

    def pool(self, x, kind, stride):
        h, w, c = x
        return math.ceil(h / stride), math.ceil(w / stride), c

    def shift(self, x):
        h, w, c = x
        return h - 1, w - 1, c

    def add(self, xs):
        return list(xs)[0]  # every addend is walked, so every op is counted

    def concat(self, xs):
        return xs[0][0], xs[0][1], sum(x[2] for x in xs)

    def classifier(self, x, num_classes):
        self.macs += x[2] * num_classes
        return (num_classes,)


def network_macs(genotype, setting, channels, num_cells, num_classes, image_size):
    """Multiply-adds of one image through the network (no auxiliary head)."""
    counter = MacCounter()
    counter.network((image_size, image_size, 3), genotype, setting, channels, num_cells, num_classes, image_size)
    return counter.macs


def op_macs(name, channels, height, width, stride=1):
    """Multiply-adds of one cell op on a (height, width, channels) input: the FLOPs table's entry
    (DARTS's `none` computes nothing)."""
    if name == 'none':
        return 0
    counter = MacCounter()
    counter.op(name, (height, width, channels), channels, stride)
    return counter.macs
