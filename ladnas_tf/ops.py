"""The DARTS operations as Keras layers (NHWC), faithful to the reference PyTorch code.

Padding. PyTorch pads k//2 * dilation on *every* side; TensorFlow's 'same' pads the same amount
symmetrically at stride 1, but at stride 2 on an even input it pads only bottom/right, which shifts
every window by one pixel. We match PyTorch exactly:
  * stride 1: 'same' (symmetric for odd kernels);
  * stride-2 convolutions: explicit symmetric ZeroPadding2D, then a 'valid' strided conv;
  * stride-2 pooling and stride-2 dilated convs: the stride-1 op, then keep every second pixel.
    PyTorch's output i of a stride-2 window centred at 2i *is* the stride-1 output at 2i, including
    avg-pool's count_include_pad=False border counts (TF's 'same' avg pool excludes padding too).
    Keras also refuses strides > 1 together with dilation > 1, which this sidesteps.

Each op lists its weighted_layers() in creation order: the order in which the genotype walk
(graph/walk.py) meets them, so another emitter of the walk can take trained weights one for one.
"""
import keras
from keras import layers

from ladnas_tf.bad_input import BadInput

BN_MOMENTUM = 0.9   # PyTorch's momentum=0.1 (weight of the new batch) is Keras' 0.9
BN_EPSILON = 1e-5
_PACKAGE = 'ladnas_tf'


def batch_norm(affine=True, name=None):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                     center=affine, scale=affine, name=name)


def weighted(seq):
    """The layers of `seq` that hold weights, in order."""
    return [layer for layer in seq
            if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.BatchNormalization, layers.Dense))]


@keras.saving.register_keras_serializable(_PACKAGE)
class Subsample(layers.Layer):
    """Keeps every `stride`-th pixel: the stride-1 op followed by this is PyTorch's stride-`stride` op."""

    def __init__(self, stride=2, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride

    def call(self, x):
        return x[:, ::self.stride, ::self.stride, :]

    def get_config(self):
        return {**super().get_config(), 'stride': self.stride}


def apply(seq, x, training=None):
    """Applies layers in order, passing `training` to the ones whose behaviour depends on it."""
    for layer in seq:
        x = layer(x, training=training) if isinstance(layer, (layers.BatchNormalization, _Op)) else layer(x)
    return x


def conv_layers(filters, kernel_size, strides=1, dilation=1, depthwise=False):
    """A conv (or depthwise conv) with PyTorch's padding, as a list of layers to apply in order."""
    pad = dilation * (kernel_size - 1) // 2
    make = (lambda **kw: layers.DepthwiseConv2D(kernel_size, use_bias=False, **kw)) if depthwise \
        else (lambda **kw: layers.Conv2D(filters, kernel_size, use_bias=False, **kw))
    if strides == 1:
        return [make(padding='same', dilation_rate=dilation)]
    if dilation == 1:
        return ([layers.ZeroPadding2D(pad)] if pad else []) + [make(padding='valid', strides=strides)]
    return [make(padding='same', dilation_rate=dilation), Subsample(strides)]


class _Op(layers.Layer):
    """A cell operation: config in __init__, math in call, its weighted layers in weighted_layers."""

    def __init__(self, filters, strides=1, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.strides, self.affine = filters, strides, affine

    def build(self, input_shape):
        # Symbolic call: builds the sublayers, so a deserialized op can take its weights.
        self.compute_output_spec(keras.KerasTensor(input_shape))

    def weighted_layers(self):
        return []

    def get_config(self):
        return {**super().get_config(), 'filters': self.filters, 'strides': self.strides,
                'affine': self.affine}


@keras.saving.register_keras_serializable(_PACKAGE)
class ReLUConvBN(_Op):
    """ReLU -> kxk conv -> BN (DARTS's preprocessing of a cell's inputs uses the 1x1 form)."""

    def __init__(self, filters, kernel_size=1, strides=1, affine=True, **kwargs):
        super().__init__(filters, strides, affine, **kwargs)
        self.kernel_size = kernel_size
        self.seq = [layers.ReLU()] + conv_layers(filters, kernel_size, strides) + [batch_norm(affine)]

    def call(self, x, training=None):
        return apply(self.seq, x, training)

    def weighted_layers(self):
        return weighted(self.seq)

    def get_config(self):
        return {**super().get_config(), 'kernel_size': self.kernel_size}


@keras.saving.register_keras_serializable(_PACKAGE)
class DilConv(_Op):
    """ReLU -> depthwise kxk (dilation) -> 1x1 -> BN."""

    def __init__(self, filters, kernel_size=3, strides=1, dilation=2, affine=True, **kwargs):
        super().__init__(filters, strides, affine, **kwargs)
        self.kernel_size, self.dilation = kernel_size, dilation
        self.seq = ([layers.ReLU()]
                    + conv_layers(None, kernel_size, strides, dilation, depthwise=True)
                    + [layers.Conv2D(filters, 1, use_bias=False), batch_norm(affine)])

    def call(self, x, training=None):
        return apply(self.seq, x, training)

    def weighted_layers(self):
        return weighted(self.seq)

    def get_config(self):
        return {**super().get_config(), 'kernel_size': self.kernel_size, 'dilation': self.dilation}


@keras.saving.register_keras_serializable(_PACKAGE)
class SepConv(_Op):
    """DARTS's separable conv: (ReLU, depthwise kxk, 1x1, BN) twice, the stride only in the first."""

    def __init__(self, filters, kernel_size=3, strides=1, affine=True, **kwargs):
        super().__init__(filters, strides, affine, **kwargs)
        self.kernel_size = kernel_size
        # In a cell every op maps C channels to C, so DARTS's C_in -> C_in -> C_out is C -> C -> C.
        self.first = DilConv(filters, kernel_size, strides, dilation=1, affine=affine)
        self.second = DilConv(filters, kernel_size, 1, dilation=1, affine=affine)

    def call(self, x, training=None):
        return self.second(self.first(x, training=training), training=training)

    def weighted_layers(self):
        return self.first.weighted_layers() + self.second.weighted_layers()

    def get_config(self):
        return {**super().get_config(), 'kernel_size': self.kernel_size}


@keras.saving.register_keras_serializable(_PACKAGE)
class FactorizedReduce(_Op):
    """Halves the resolution: ReLU, two 1x1 stride-2 convs (the second on the input shifted by one
    pixel), concatenated to `filters` channels, BN."""

    def __init__(self, filters, strides=2, affine=True, **kwargs):
        super().__init__(filters, strides, affine, **kwargs)
        if filters % 2:
            raise BadInput(f'FactorizedReduce needs an even channel count, got {filters}')
        self.relu = layers.ReLU()
        self.conv_1 = layers.Conv2D(filters // 2, 1, strides=2, use_bias=False)
        self.conv_2 = layers.Conv2D(filters // 2, 1, strides=2, use_bias=False)
        self.bn = batch_norm(affine)

    def call(self, x, training=None):
        x = self.relu(x)
        y = keras.ops.concatenate([self.conv_1(x), self.conv_2(x[:, 1:, 1:, :])], axis=-1)
        return self.bn(y, training=training)

    def weighted_layers(self):
        return [self.conv_1, self.conv_2, self.bn]


@keras.saving.register_keras_serializable(_PACKAGE)
class Pool(_Op):
    """3x3 max or average pooling, padding 1 (average excludes the padding, as DARTS's)."""

    def __init__(self, filters=None, strides=1, affine=True, kind='max', **kwargs):
        super().__init__(filters, strides, affine, **kwargs)
        if kind not in ('max', 'avg'):
            raise BadInput(f'unknown pooling {kind!r}')
        self.kind = kind
        pool = layers.MaxPooling2D if kind == 'max' else layers.AveragePooling2D
        self.seq = [pool(3, strides=1, padding='same')] + ([Subsample(strides)] if strides > 1 else [])

    def call(self, x, training=None):
        return apply(self.seq, x, training)

    def get_config(self):
        return {**super().get_config(), 'kind': self.kind}


@keras.saving.register_keras_serializable(_PACKAGE)
class Identity(_Op):
    def call(self, x, training=None):
        return x


@keras.saving.register_keras_serializable(_PACKAGE)
class Zero(_Op):
    """DARTS's `none`: zeros at the output resolution."""

    def call(self, x, training=None):
        return keras.ops.zeros_like(x[:, ::self.strides, ::self.strides, :])


def skip_connect(filters, strides=1, affine=True):
    return Identity(filters, 1, affine) if strides == 1 else FactorizedReduce(filters, strides, affine)


# name -> factory(filters, strides, affine): one registry for the evaluation networks and the supernet.
OPS = {
    'none': lambda c, s, a: Zero(c, s, a),
    'max_pool_3x3': lambda c, s, a: Pool(c, s, a, kind='max'),
    'avg_pool_3x3': lambda c, s, a: Pool(c, s, a, kind='avg'),
    'skip_connect': skip_connect,
    'sep_conv_3x3': lambda c, s, a: SepConv(c, 3, s, a),
    'sep_conv_5x5': lambda c, s, a: SepConv(c, 5, s, a),
    'dil_conv_3x3': lambda c, s, a: DilConv(c, 3, s, 2, a),
    'dil_conv_5x5': lambda c, s, a: DilConv(c, 5, s, 2, a),
}

