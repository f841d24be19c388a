"""The DARTS ops: shapes, PyTorch's padding semantics against NumPy references, configs, MACs."""
import keras
import numpy as np
import pytest

from ladnas_tf import ops
from ladnas_tf.graph import macs
from ladnas_tf.search_space import PRIMITIVES

C = 4


def images(size, channels=C, seed=0):
    return np.random.default_rng(seed).standard_normal((2, size, size, channels)).astype(np.float32)


def windows(x, k, stride, dilation=1):
    """PyTorch's windows: output i of a k-tap window centred at stride * i, padding
    dilation * (k - 1) // 2 on every side. Yields (i, j, taps) with taps a list of
    (a, b, pixel or None outside the image)."""
    size = x.shape[1]
    out = (size + 2 * (dilation * (k - 1) // 2) - dilation * (k - 1) - 1) // stride + 1
    half = (k - 1) // 2
    for i in range(out):
        for j in range(out):
            taps = []
            for a in range(k):
                for b in range(k):
                    r, c = stride * i + dilation * (a - half), stride * j + dilation * (b - half)
                    inside = 0 <= r < size and 0 <= c < size
                    taps.append((a, b, x[:, r, c, :] if inside else None))
            yield i, j, taps, out


def ref_pool(x, kind, stride):
    """nn.MaxPool2d(3, stride, 1) / nn.AvgPool2d(3, stride, 1, count_include_pad=False)."""
    out = None
    for i, j, taps, n in windows(x, 3, stride):
        if out is None:
            out = np.zeros((x.shape[0], n, n, x.shape[3]), np.float32)
        inside = np.stack([t for _, _, t in taps if t is not None])
        out[:, i, j] = inside.max(0) if kind == 'max' else inside.mean(0)
    return out


def ref_conv(x, kernel, stride, dilation=1, depthwise=False):
    """nn.Conv2d(padding=dilation * (k - 1) // 2, bias=False), optionally groups=C (depthwise)."""
    k = kernel.shape[0]
    out = None
    for i, j, taps, n in windows(x, k, stride, dilation):
        if out is None:
            cout = x.shape[3] if depthwise else kernel.shape[3]
            out = np.zeros((x.shape[0], n, n, cout), np.float32)
        for a, b, t in taps:
            if t is not None:
                out[:, i, j] += t * kernel[a, b, :, 0] if depthwise else t @ kernel[a, b]
    return out


# ---- shapes ----

@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('name', PRIMITIVES)
def test_op_output_shape(name, stride):
    y = ops.OPS[name](C, stride, True)(images(8), training=False)
    assert tuple(y.shape) == (2, 8 // stride, 8 // stride, C)


# ---- PyTorch's stride-2 semantics ----

@pytest.mark.parametrize('size', [8, 7])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('kind', ['max', 'avg'])
def test_pooling_matches_pytorch(kind, stride, size):
    x = images(size)
    y = ops.Pool(C, stride, kind=kind)(x)
    np.testing.assert_allclose(y, ref_pool(x, kind, stride), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('size', [8, 7])
@pytest.mark.parametrize('k, dilation', [(3, 2), (5, 2), (3, 1), (5, 1)])
def test_stride2_depthwise_conv_matches_pytorch(k, dilation, size):
    x = images(size)
    seq = ops.conv_layers(None, k, strides=2, dilation=dilation, depthwise=True)
    y = ops.apply(seq, x)
    kernel = keras.ops.convert_to_numpy(seq[0 if dilation > 1 else -1].kernel)
    np.testing.assert_allclose(y, ref_conv(x, kernel, 2, dilation, depthwise=True), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('size', [8, 7])
def test_stride2_conv_matches_pytorch(size):
    x = images(size)
    seq = ops.conv_layers(6, 3, strides=2)
    y = ops.apply(seq, x)
    np.testing.assert_allclose(y, ref_conv(x, keras.ops.convert_to_numpy(seq[-1].kernel), 2),
                               rtol=1e-4, atol=1e-5)


def randomize_batch_norms(layer, seed=0):
    """Non-trivial BN statistics, so that BN's inference math is part of what is compared."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        if any(s in w.path for s in ('gamma', 'moving_variance')):
            w.assign(rng.uniform(0.5, 1.5, w.shape))
        elif any(s in w.path for s in ('beta', 'moving_mean')):
            w.assign(rng.normal(0, 0.3, w.shape))


def test_factorized_reduce_shifts_its_second_conv_by_one_pixel():
    x = images(8)
    op = ops.FactorizedReduce(C)
    op(x, training=False)
    randomize_batch_norms(op)
    y = op(x, training=False)
    r = np.maximum(x, 0)
    k1, k2 = (keras.ops.convert_to_numpy(conv.kernel)[0, 0] for conv in (op.conv_1, op.conv_2))
    z = np.concatenate([r[:, ::2, ::2] @ k1, r[:, 1::2, 1::2] @ k2], axis=-1)
    bn = {w.path.split('/')[-1]: keras.ops.convert_to_numpy(w) for w in op.bn.weights}
    expected = bn['gamma'] * (z - bn['moving_mean']) / np.sqrt(bn['moving_variance'] + ops.BN_EPSILON) \
        + bn['beta']
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_factorized_reduce_needs_even_channels():
    with pytest.raises(ValueError, match='even channel count, got 5'):
        ops.FactorizedReduce(5)


def test_zero_is_zero_at_the_output_resolution():
    y = ops.Zero(C, 2)(images(8))
    assert tuple(y.shape) == (2, 4, 4, C) and not np.any(keras.ops.convert_to_numpy(y))


# ---- configs ----

LAYERS = {
    'ReLUConvBN': lambda: ops.ReLUConvBN(C, 3, 2, affine=False),
    'DilConv': lambda: ops.DilConv(C, 5, 2, dilation=2),
    'SepConv': lambda: ops.SepConv(C, 3, 2),
    'FactorizedReduce': lambda: ops.FactorizedReduce(C),
    'Pool': lambda: ops.Pool(C, 2, kind='avg'),
    'Identity': lambda: ops.Identity(C),
    'Zero': lambda: ops.Zero(C, 2),
    'Subsample': lambda: ops.Subsample(2),
}


@pytest.mark.parametrize('name', list(LAYERS))
def test_get_config_round_trip(name):
    layer, x = LAYERS[name](), images(8)
    y = layer(x, training=False)
    config = layer.get_config()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is type(layer) and clone.get_config() == config
    again = type(layer).from_config(config)
    assert again.get_config() == config
    clone(x, training=False)
    assert [w.shape for w in clone.weights] == [w.shape for w in layer.weights]
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x, training=False), y)


# ---- weighted layers: the order the genotype walk meets them ----

@pytest.mark.parametrize('name,kinds', [
    ('sep_conv_3x3', ['DepthwiseConv2D', 'Conv2D', 'BatchNormalization'] * 2),
    ('dil_conv_5x5', ['DepthwiseConv2D', 'Conv2D', 'BatchNormalization']),
    ('skip_connect', ['Conv2D', 'Conv2D', 'BatchNormalization']),  # stride 2: FactorizedReduce
    ('max_pool_3x3', []), ('none', [])])
def test_weighted_layers_in_creation_order(name, kinds):
    op = ops.OPS[name](C, 2, True)
    op(images(8), training=False)
    found = op.weighted_layers()
    assert [type(layer).__name__ for layer in found] == kinds
    assert sum(len(layer.weights) for layer in found) == len(op.weights)


# ---- multiply-adds (graph/macs.py counts them on the walk) ----

def test_op_macs_by_hand():
    c, h = 16, 8
    # sep_conv_3x3: twice (depthwise 3x3: 9 C, pointwise: C * C per pixel), stride only in the first.
    assert macs.op_macs('sep_conv_3x3', c, h, h, 1) == 2 * 64 * (9 * 16 + 16 * 16) == 51_200
    assert macs.op_macs('sep_conv_3x3', c, h, h, 2) == 2 * 16 * (9 * 16 + 16 * 16) == 12_800
    assert macs.op_macs('sep_conv_5x5', c, h, h, 1) == 2 * 64 * (25 * 16 + 16 * 16)
    assert macs.op_macs('dil_conv_3x3', c, h, h, 2) == 16 * (9 * 16 + 16 * 16)
    # FactorizedReduce: two 1x1 convs C -> C/2 on the 4x4 output grid.
    assert macs.op_macs('skip_connect', c, h, h, 2) == 2 * 16 * 16 * 8 == 4_096
    assert macs.op_macs('skip_connect', c, h, h, 1) == 0
    for name in ('none', 'max_pool_3x3', 'avg_pool_3x3'):
        assert macs.op_macs(name, c, h, h, 2) == 0
    # ReLUConvBN 1x1 (a cell's preprocessing), 32 -> 16 channels.
    counter = macs.MacCounter()
    assert counter.relu_conv_bn((8, 8, 32), 16) == (8, 8, 16) and counter.macs == 64 * 32 * 16
