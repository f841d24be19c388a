"""The genotype walk: which cells an evaluation network holds and what each cell computes.

DARTS's NetworkCIFAR / NetworkImageNet in inference (no auxiliary head, no drop-path), stated once:
`cell_plans` gives the cell sequence (which cells reduce, reduction_prev, the channel arithmetic
C_prev_prev -> C_prev -> C, the map size), `nodes` each cell's intermediate nodes as their (op, input,
stride) edges. `Walk` composes them into the whole network over a few primitives that an emitter
implements (the Keras layers, constant TF ops, tf_keras layers, shapes for the MAC count, a TFLite
writer); every emitter then builds the same network, in the order the Keras network creates its layers.
"""
import math
from typing import NamedTuple

from ladnas_tf import search_space
from ladnas_tf.bad_input import BadInput

SETTINGS = ('cifar', 'imagenet')
STEM_MULTIPLIER = 3  # the CIFAR stem's channels per C


class CellPlan(NamedTuple):
    """One cell of the network: s0 has c_prev_prev channels, s1 c_prev; the cell's ops work on c
    channels, reading maps of size x size (s1's; preprocessing brings s0 there), and it outputs
    NUM_NODES * c channels of out_size x out_size."""
    index: int
    reduction: bool
    reduction_prev: bool
    c_prev_prev: int
    c_prev: int
    c: int
    size: int

    @property
    def out_size(self):
        return halve(self.size) if self.reduction else self.size

    def cell(self, genotype):
        """The genotype's (op, input) pairs of this cell's kind."""
        return genotype.reduce if self.reduction else genotype.normal


class Edge(NamedTuple):
    """One (op, input) pair of a cell: position in the cell's pairs, op name, input state, stride."""
    position: int
    op: str
    source: int
    stride: int


def check_setting(setting):
    if setting not in SETTINGS:
        raise BadInput(f'unknown setting {setting!r} (known: {", ".join(SETTINGS)})')


def halve(size):
    """A stride-2 map size (PyTorch's symmetric padding keeps the ceiling); None stays unknown."""
    return None if size is None else math.ceil(size / 2)


def is_reduction(index, num_cells):
    """DARTS reduces at a third and two thirds of the depth."""
    return index in (num_cells // 3, 2 * num_cells // 3)


def stem_outputs(setting, channels, image_size):
    """((channels, size) of s0, of s1) after the stem, and whether the stem reduced (reduction_prev)."""
    if setting == 'cifar':
        return (STEM_MULTIPLIER * channels, image_size), (STEM_MULTIPLIER * channels, image_size), False
    s0 = halve(halve(image_size))  # ImageNet: two stride-2 convs to s0, a third to s1
    return (channels, s0), (channels, halve(s0)), True


def cell_plans(setting, channels, num_cells, image_size=None):
    """The cells of the network, in order (a list of CellPlan; sizes None without an image_size)."""
    check_setting(setting)
    (c_pp, _), (c_p, size), reduction_prev = stem_outputs(setting, channels, image_size)
    c, plans = channels, []
    for i in range(num_cells):
        reduction = is_reduction(i, num_cells)
        c *= 2 if reduction else 1
        plans.append(CellPlan(i, reduction, reduction_prev, c_pp, c_p, c, size))
        c_pp, c_p, reduction_prev, size = c_p, c * search_space.NUM_NODES, reduction, plans[-1].out_size
    return plans


def input_stride(source, reduction):
    """A reduction cell halves the map on the edges that read its two inputs."""
    return 2 if reduction and source < search_space.NUM_INPUTS else 1


def nodes(cell, reduction):
    """Per intermediate node, its INPUTS_PER_NODE edges (node-major, as the genotype lists them)."""
    k = search_space.INPUTS_PER_NODE
    return tuple(tuple(Edge(p, cell[p][0], int(cell[p][1]), input_stride(int(cell[p][1]), reduction))
                       for p in range(k * node, k * node + k))
                 for node in range(search_space.NUM_NODES))


class Walk:
    """The network over primitives a subclass implements:
    conv(x, filters, k, stride, dilation, depthwise) with PyTorch's padding (ops.py), bn(x), relu(x),
    pool(x, 'max'|'avg', stride), shift(x) (drop the first row and column), add(iterable: consume it
    all), concat(list) on channels, classifier(x, num_classes) (global mean, then dense).
    Weighted primitives (conv, bn, classifier) are met in the Keras network's layer order."""

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

    def cell(self, s0, s1, cell, plan):
        states = [self.factorized_reduce(s0, plan.c) if plan.reduction_prev else self.relu_conv_bn(s0, plan.c),
                  self.relu_conv_bn(s1, plan.c)]
        for node in nodes(cell, plan.reduction):
            states.append(self.add(self.op(e.op, states[e.source], plan.c, e.stride) for e in node))
        return self.concat([states[i] for i in search_space.CONCAT])

    def stem(self, x, setting, channels):
        """(s0, s1): the CIFAR stem's one conv feeds both; ImageNet's stem0 feeds s0, stem1 s1."""
        if setting == 'cifar':
            s = self.bn(self.conv(x, STEM_MULTIPLIER * channels, 3))
            return s, s
        s0 = self.bn(self.conv(self.relu(self.bn(self.conv(x, channels // 2, 3, 2))), channels, 3, 2))
        return s0, self.relu_conv_bn(s0, channels, 3, 2)

    def network(self, x, genotype, setting, channels, num_cells, num_classes, image_size):
        s0, s1 = self.stem(x, setting, channels)
        for plan in cell_plans(setting, channels, num_cells, image_size):
            s0, s1 = s1, self.cell(s0, s1, plan.cell(genotype), plan)
        return self.classifier(s1, num_classes)
