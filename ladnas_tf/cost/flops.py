"""The FLOPs-aware baseline of the paper's Table 4: eta * FLOPs(alpha), the MACs of every op weighted by
softmax(alpha), priced where the genotype walk places it in the evaluation network."""
import numpy as np
import tensorflow as tf

from ladnas_tf import search_space
from ladnas_tf.graph import macs, walk


def macs_table(channels, image_size, num_cells, setting='cifar'):
    """Per-op MACs (millions) for the normal and the reduction cells of an evaluation network, summed
    over the cells of each kind: two [14, 8] tables (edge, op), every op priced where the genotype walk
    would place it (its cell's channels, map size and stride), `none` costing nothing."""
    normal = np.zeros((search_space.NUM_EDGES, search_space.NUM_OPS))
    reduce = np.zeros_like(normal)
    for plan in walk.cell_plans(setting, channels, num_cells, image_size):
        table = reduce if plan.reduction else normal
        for e, (source, _) in enumerate(search_space.EDGES):
            size = plan.size if source < search_space.NUM_INPUTS else plan.out_size
            stride = walk.input_stride(source, plan.reduction)
            for o, name in enumerate(search_space.PRIMITIVES):
                table[e, o] += macs.op_macs(name, plan.c, size, size, stride) / 1e6
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


class FlopsTerm:
    """eta * FLOPs(alpha) / scale, the FLOPs-aware baseline of the paper's Table 4 (scale: a reference
    network's MACs in the same tables, so that eta and lambda_ weigh costs alike)."""

    def __init__(self, eta, tables, scale=1.0):
        self.eta, self.tables, self.scale = eta, tables, float(scale)

    def __call__(self, model):
        return self.eta * flops(model.alpha_normal, model.alpha_reduce, self.tables) / self.scale
