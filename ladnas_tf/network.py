"""Evaluation networks built from a genotype (DARTS's NetworkCIFAR and NetworkImageNet).

The cell sequence and each cell's nodes come from the genotype walk (graph/walk.py), which the other
emitters (the MAC count, the profiler's graph, the QAT rebuild) follow too. Parameters are counted as
the DARTS reference code logs them (trainable weights, so BN scale and offset but not its moving
statistics; the auxiliary head excluded); multiply-adds are graph/macs.py's, the auxiliary head excluded.
"""
import keras
import numpy as np
from keras import layers

from ladnas_tf import search_space
from ladnas_tf.bad_input import BadInput
from ladnas_tf.graph import macs, walk
from ladnas_tf.ops import OPS, FactorizedReduce, Identity, ReLUConvBN, apply, batch_norm, conv_layers, weighted

_PACKAGE = 'ladnas_tf'
SETTINGS = walk.SETTINGS


@keras.saving.register_keras_serializable(_PACKAGE)
class Cell(layers.Layer):
    """A discrete cell: node j sums op(input) over its two (op, input) pairs; output = concat(2..5)."""

    def __init__(self, cell, filters, reduction, reduction_prev, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.cell = tuple((op, int(i)) for op, i in cell)
        search_space.validate_cell(self.cell)
        self.filters, self.reduction, self.reduction_prev, self.seed = (
            filters, reduction, reduction_prev, seed)
        self.preprocess0 = (FactorizedReduce(filters) if reduction_prev
                            else ReLUConvBN(filters, 1))
        self.preprocess1 = ReLUConvBN(filters, 1)
        self.nodes = walk.nodes(self.cell, reduction)
        self.edge_ops = [OPS[e.op](filters, e.stride, True) for node in self.nodes for e in node]
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        # A weight, not a Python float, so the schedule changes it without retracing and checkpoints keep it.
        self.drop_path_rate = self.add_weight(shape=(), initializer='zeros', trainable=False,
                                              name='drop_path_rate')

    def _drop_path(self, x):
        """DARTS's drop-path: zero a whole sample's branch with probability rate, rescale the rest."""
        keep = 1.0 - self.drop_path_rate
        noise = keras.random.uniform((keras.ops.shape(x)[0], 1, 1, 1), seed=self.seed_generator)
        return x / keep * keras.ops.floor(keep + noise)

    def call(self, inputs, training=None):
        s0, s1 = inputs
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        for node in self.nodes:
            total = 0
            for edge in node:
                op = self.edge_ops[edge.position]
                h = op(states[edge.source], training=training)
                if training and not isinstance(op, Identity):
                    h = self._drop_path(h)
                total = total + h
            states.append(total)
        return keras.ops.concatenate([states[i] for i in search_space.CONCAT], axis=-1)

    def weighted_layers(self):
        """The layers with weights, in the walk's order."""
        return [layer for op in [self.preprocess0, self.preprocess1, *self.edge_ops]
                for layer in op.weighted_layers()]

    def get_config(self):
        return {**super().get_config(), 'cell': [list(e) for e in self.cell], 'filters': self.filters,
                'reduction': self.reduction, 'reduction_prev': self.reduction_prev, 'seed': self.seed}


@keras.saving.register_keras_serializable(_PACKAGE)
class AuxiliaryHead(layers.Layer):
    """DARTS's auxiliary classifier: ReLU, 5x5 avg pool, 1x1 conv 128, BN, ReLU, 2x2 conv 768, BN, ReLU, FC.
    The pool stride is 3 on CIFAR (8x8 -> 2x2) and 2 on ImageNet (7x7 -> 2x2)."""

    def __init__(self, num_classes, pool_stride=3, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.pool_stride = num_classes, pool_stride
        self.seq = [layers.ReLU(), layers.AveragePooling2D(5, pool_stride, padding='valid'),
                    layers.Conv2D(128, 1, use_bias=False), batch_norm(), layers.ReLU(),
                    layers.Conv2D(768, 2, use_bias=False), batch_norm(), layers.ReLU(),
                    layers.Flatten(), layers.Dense(num_classes)]

    def call(self, x, training=None):
        return apply(self.seq, x, training)

    def get_config(self):
        return {**super().get_config(), 'num_classes': self.num_classes, 'pool_stride': self.pool_stride}


class _Network(keras.Model):
    """Stem, `num_cells` cells (reductions at 1/3 and 2/3 of the depth), global pooling, classifier.

    call returns logits; in training with `auxiliary` it returns (logits, auxiliary logits)."""

    def __init__(self, genotype, channels, num_cells, num_classes, auxiliary=False, seed=None,
                 image_size=None, **kwargs):
        super().__init__(**kwargs)
        self.image_size = image_size
        if isinstance(genotype, str):
            genotype = search_space.parse(genotype)
        search_space.validate(genotype)
        self.genotype, self.channels, self.num_cells = genotype, channels, num_cells
        self.num_classes, self.auxiliary, self.seed = num_classes, auxiliary, seed
        self.aux_index = 2 * num_cells // 3
        self._make_stem()
        self.cells_ = [Cell(plan.cell(genotype), plan.c, plan.reduction, plan.reduction_prev,
                            seed=None if seed is None else seed + plan.index, name=f'cell_{plan.index}')
                       for plan in walk.cell_plans(self.setting, channels, num_cells, image_size)]
        self.global_pool = layers.GlobalAveragePooling2D()
        self.classifier = layers.Dense(num_classes, name='classifier')
        self.aux_head = (AuxiliaryHead(num_classes, self._aux_pool_stride, name='auxiliary_head')
                         if auxiliary else None)

    def build(self, input_shape):
        # Tracing call symbolically creates every sublayer's weights without running any math;
        # in training mode, so the auxiliary head is built too.
        self.compute_output_spec(keras.KerasTensor(input_shape), training=True)

    def call(self, x, training=None):
        s0, s1 = self._stem(x, training)
        logits_aux = None
        for i, cell in enumerate(self.cells_):
            s0, s1 = s1, cell([s0, s1], training=training)
            if i == self.aux_index and self.aux_head is not None and training:
                logits_aux = self.aux_head(s1, training=training)
        logits = self.classifier(self.global_pool(s1))
        return logits if logits_aux is None else (logits, logits_aux)

    def count_eval_params(self):
        """Trainable parameters without the auxiliary head: the figure DARTS logs for an evaluation
        network (Keras' count_params counts every weight, BN's moving statistics and the head too)."""
        aux = set(id(w) for w in self.aux_head.trainable_weights) if self.aux_head else set()
        return int(sum(np.prod(w.shape) for w in self.trainable_weights if id(w) not in aux))

    def count_macs(self):
        """Multiply-adds of one image (convolutions and the classifier; no auxiliary head)."""
        return macs.network_macs(self.genotype, self.setting, self.channels, self.num_cells, self.num_classes,
                                 self.image_size)

    def weighted_layers(self):
        """The layers with weights in the order the genotype walk meets them (stem, cells, classifier;
        no auxiliary head), so another emitter of the walk can take the weights one for one."""
        return (weighted(self._stem_layers()) + [layer for cell in self.cells_ for layer in cell.weighted_layers()]
                + [self.classifier])

    def set_drop_path_rate(self, rate):
        for cell in self.cells_:
            cell.drop_path_rate.assign(rate)

    def get_config(self):
        return {'genotype': self.genotype.to_json(), 'channels': self.channels,
                'num_cells': self.num_cells, 'num_classes': self.num_classes,
                'auxiliary': self.auxiliary, 'seed': self.seed, 'image_size': self.image_size,
                'name': self.name}


@keras.saving.register_keras_serializable(_PACKAGE)
class NetworkCIFAR(_Network):
    """DARTS's CIFAR network: a 3x3 conv stem to 3C channels; the auxiliary head sees the 8x8 map."""
    setting = 'cifar'
    _aux_pool_stride = 3

    def __init__(self, genotype, channels=36, num_cells=20, num_classes=10, auxiliary=False,
                 seed=None, image_size=32, **kwargs):
        super().__init__(genotype, channels, num_cells, num_classes, auxiliary, seed, image_size,
                         **kwargs)

    def _make_stem(self):
        self.stem = [layers.Conv2D(walk.STEM_MULTIPLIER * self.channels, 3, padding='same', use_bias=False),
                     batch_norm()]

    def _stem_layers(self):
        return self.stem

    def _stem(self, x, training):
        s = apply(self.stem, x, training)
        return s, s


@keras.saving.register_keras_serializable(_PACKAGE)
class NetworkImageNet(_Network):
    """DARTS's ImageNet mobile network: three stride-2 3x3 convs bring 224x224 down to 28x28."""
    setting = 'imagenet'
    _aux_pool_stride = 2

    def __init__(self, genotype, channels=48, num_cells=14, num_classes=1000, auxiliary=False,
                 seed=None, image_size=224, **kwargs):
        super().__init__(genotype, channels, num_cells, num_classes, auxiliary, seed, image_size,
                         **kwargs)

    def _make_stem(self):
        c = self.channels
        self.stem0 = (conv_layers(c // 2, 3, 2) + [batch_norm(), layers.ReLU()]
                      + conv_layers(c, 3, 2) + [batch_norm()])
        self.stem1 = [layers.ReLU()] + conv_layers(c, 3, 2) + [batch_norm()]

    def _stem_layers(self):
        return self.stem0 + self.stem1

    def _stem(self, x, training):
        s0 = apply(self.stem0, x, training)
        return s0, apply(self.stem1, s0, training)


def build_network(genotype, setting='cifar', channels=None, num_cells=None, num_classes=None,
                  auxiliary=False, image_size=None, seed=None):
    """A built evaluation network: the paper's defaults per setting, any of them overridable."""
    walk.check_setting(setting)
    cls = NetworkCIFAR if setting == 'cifar' else NetworkImageNet
    defaults = dict(cifar=(36, 20, 10, 32), imagenet=(48, 14, 1000, 224))[setting]
    c, n, k, s = (v if v is not None else d for v, d in
                  zip((channels, num_cells, num_classes, image_size), defaults))
    check_image_size(setting, s)
    model = cls(genotype, c, n, k, auxiliary=auxiliary, seed=seed, image_size=s)
    model.build((None, s, s, 3))
    return model


def check_image_size(setting, image_size):
    """The reductions halve maps with FactorizedReduce (in skip_connect and in the next cell's
    preprocessing), whose two strided paths (x and x shifted by one pixel) only agree on even sizes: for
    every genotype, the map entering the cells must be a multiple of 4 (on ImageNet, the
    stem's two strided convs take it to ceil(size / 4), which must be even, and its third to a multiple
    of 4: a multiple of 32 such as 224 always fits)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise BadInput(f'image_size must be a positive integer, got {image_size!r}')
    if setting == 'cifar':
        fits, need = image_size % 4 == 0, 'a multiple of 4'
    else:
        quarter = -(-(-(-image_size // 2)) // 2)
        fits, need = quarter % 2 == 0 and (quarter // 2) % 4 == 0, 'a multiple of 32 (e.g. 224)'
    if not fits:
        raise BadInput(f'image_size {image_size} does not fit the {setting} network: its reductions halve '
                         f'the map, which needs {need}')
