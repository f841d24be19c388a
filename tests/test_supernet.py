"""The supernet: its batched MixedOp equals DARTS's ops edge by edge, PC-DARTS's partial channels,
shuffle and edge normalisation, the alpha/weight split and DARTS's genotype derivation."""
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from ladnas_tf import ops, search_space, supernet
from ladnas_tf.graph import walk

C, E = 4, 2


@pytest.fixture(scope='module')
def model():
    return supernet.build_supernet(channels=4, layers=3, num_classes=3, image_size=8, seed=0)


def _reference_op(name, mixed, edge, strides, x):
    """DARTS's op `name` on edge `edge` built from ops.py (non-affine), weights copied from `mixed`."""
    op = ops.OPS[name](C, strides, False)
    out = op(x, training=True)  # builds the layers
    if name.startswith(('sep', 'dil')):
        k = int(name[-1])
        stages = [op.first, op.second] if name.startswith('sep') else [op]
        for s, stage in enumerate(stages):
            key = f'{name}_{s}'
            dw = mixed.depthwise_kernels[k].numpy()[supernet.MixedOp._DW[k].index(key)]
            pw = mixed.pointwise_kernels.numpy()[supernet.MixedOp._PW.index(key)][edge]
            convs = [layer for layer in stage.seq if isinstance(layer, (layers.DepthwiseConv2D, layers.Conv2D))]
            convs[0].kernel.assign(dw[:, :, edge * C:(edge + 1) * C, :])
            convs[1].kernel.assign(pw[None, None])
    elif name == 'skip_connect' and strides == 2:
        kernels = mixed.reduce_kernels.numpy()[:, :, edge * C // 2:(edge + 1) * C // 2]
        op.conv_1.kernel.assign(kernels[0][None, None])
        op.conv_2.kernel.assign(kernels[1][None, None])
    else:
        return out
    return op(x, training=True)


@pytest.mark.parametrize('strides', [1, 2])
def test_mixed_op_equals_darts_ops_edge_by_edge(strides):
    rng = np.random.default_rng(strides)
    x = tf.constant(rng.normal(size=(3, 8, 8, C)), tf.float32)
    weights = tf.nn.softmax(tf.constant(rng.normal(size=(E, search_space.NUM_OPS)), tf.float32))
    mixed = supernet.MixedOp(C, E, strides, seed=1)
    out = mixed(x, weights, training=True).numpy()
    assert out.shape == (3, 8 // strides, 8 // strides, E, C)
    for edge in range(E):
        expected = 0.
        for k, name in enumerate(search_space.PRIMITIVES):
            y = _reference_op(name, mixed, edge, strides, x)
            if 'pool' in name:  # DARTS follows pooling with a non-affine BN
                y = ops.batch_norm(False)(y, training=True)
            expected = expected + weights[edge, k] * y
        np.testing.assert_allclose(out[..., edge, :], expected, atol=2e-4)


def test_channel_shuffle_is_pytorchs():
    x = np.arange(2 * 8).reshape(1, 1, 2, 8).astype(np.float32)
    groups, n = 4, 2
    # PyTorch: view(b, groups, n, h, w).transpose(1, 2): new channel i * groups + g <- old g * n + i
    expected = np.empty_like(x)
    for g in range(groups):
        for i in range(n):
            expected[..., i * groups + g] = x[..., g * n + i]
    np.testing.assert_array_equal(supernet.channel_shuffle(tf.constant(x), groups).numpy(), expected)


def test_partial_channel_cell_equals_the_per_edge_formula():
    """PC-DARTS's cell: node j = sum over its edges of beta_e * shuffle(concat(MixedOp_e(x[:C/K]),
    bypass)), the bypass max-pooled at stride 2. The cell folds beta and sums per node instead."""
    k, c = 2, 4
    rng = np.random.default_rng(3)
    cell = supernet.SearchCell(c, reduction=True, reduction_prev=False, partial_channels=k, seed=2)
    s0, s1 = (tf.constant(rng.normal(size=(2, 8, 8, 6)), tf.float32) for _ in range(2))
    op_weights = tf.nn.softmax(tf.constant(rng.normal(size=(14, 8)), tf.float32))
    beta = supernet.normalize_edges(tf.constant(rng.normal(size=(14,)), tf.float32))
    out = cell([s0, s1], op_weights, beta, training=True).numpy()

    states = list(cell._preprocess(s0, s1, True))
    edge_outputs = {}
    for source, op in enumerate(cell.mixed):
        x = states[source]
        targets, edges = supernet._targets(source)
        mixed = op(x[..., :c // k], tf.gather(op_weights, edges), training=True)
        bypass = x[..., c // k:]
        if op.strides == 2:
            bypass = tf.nn.max_pool2d(bypass, 2, 2, 'VALID')
        for t, (j, e) in enumerate(zip(targets, edges)):
            edge_outputs[e] = supernet.channel_shuffle(tf.concat([mixed[..., t, :], bypass], -1), k)
        node = source + 1
        if node >= 2:
            states.append(sum(beta[search_space.edge_index(i, node)] * edge_outputs[search_space.edge_index(i, node)]
                              for i in range(node)))
    np.testing.assert_allclose(out, tf.concat(states[2:], -1).numpy(), atol=2e-5)


def test_arch_parameters_are_apart_from_the_weights(model):
    arch, weights = model.arch_parameters(), model.weight_parameters()
    assert [v.shape for v in arch] == [(14, 8), (14, 8)]
    assert {id(v) for v in arch}.isdisjoint(id(v) for v in weights)
    assert len(arch) + len(weights) == len(model.trainable_weights)
    alpha = np.concatenate([v.numpy().ravel() for v in arch])
    assert 1e-4 < alpha.std() < 1e-2  # DARTS's 1e-3 N(0, 1)
    pc = supernet.build_supernet(4, 3, 3, 8, partial_channels=2, edge_normalization=True, seed=0)
    assert [v.shape for v in pc.arch_parameters()] == [(14, 8), (14, 8), (14,), (14,)]


def test_forward_in_training_and_inference(model):
    x = tf.random.stateless_normal([2, 8, 8, 3], [0, 1])
    logits = model(x, training=True)
    assert logits.shape == (2, 3)
    before = [v.numpy().copy() for v in model.non_trainable_weights]
    np.testing.assert_allclose(model(x, training=False), model(x, training=False))  # moving statistics
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, model.non_trainable_weights))


def test_genotype_is_dartss_parse():
    w = np.full((14, 8), 0.1)
    # node 2: edges (0,2), (1,2); node 3: (0,3), (1,3), (2,3); ... strongest non-none op wins, never 'none'
    w[:, 0] = 0.9
    w[search_space.edge_index(1, 2), search_space.PRIMITIVES.index('sep_conv_3x3')] = 0.5
    w[search_space.edge_index(0, 2), search_space.PRIMITIVES.index('max_pool_3x3')] = 0.3
    w[search_space.edge_index(2, 3), search_space.PRIMITIVES.index('skip_connect')] = 0.6
    w[search_space.edge_index(0, 3), search_space.PRIMITIVES.index('dil_conv_5x5')] = 0.2
    cell = supernet.derive_cell(w)
    assert cell[:2] == (('sep_conv_3x3', 1), ('max_pool_3x3', 0))   # strongest edge first
    assert cell[2:4] == (('skip_connect', 2), ('dil_conv_5x5', 0))
    search_space.validate_cell(cell)
    # PC-DARTS: beta scales the edges, which can change which edges are kept
    beta = np.ones(14)
    beta[search_space.edge_index(0, 3)] = 0.1
    assert supernet.derive_cell(w, beta)[2:4] == (('skip_connect', 2), ('max_pool_3x3', 1))  # ties: first op


def test_genotype_of_a_model_follows_its_alpha(model):
    normal = np.zeros((14, 8), np.float32)
    for a, b in ((0, 2), (2, 5), (5, 9), (9, 14)):
        normal[a, search_space.PRIMITIVES.index('sep_conv_5x5')] = 5.
        normal[a + 1, search_space.PRIMITIVES.index('avg_pool_3x3')] = 4.
    saved = model.alpha_normal.numpy()
    model.alpha_normal.assign(normal)
    try:
        genotype = model.genotype()
    finally:
        model.alpha_normal.assign(saved)
    assert genotype.normal == (('sep_conv_5x5', 0), ('avg_pool_3x3', 1)) * 4


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match='divisible by 4'):
        supernet.build_supernet(4, 3, 3, image_size=10)
    with pytest.raises(ValueError, match='not divisible by partial_channels'):
        supernet.build_supernet(6, 3, 3, 8, partial_channels=4)


@pytest.mark.slow
@pytest.mark.parametrize('pc', [False, True])
def test_recompute_gives_the_same_gradients_and_statistics(pc):
    """recompute=True re-runs each mixed op for its gradient: same loss, same gradient for every weight
    and alpha/beta, and the BN moving statistics updated once, not twice."""
    kw = dict(partial_channels=2, edge_normalization=True) if pc else {}
    plain, again = (supernet.build_supernet(4, 3, 3, 8, seed=0, recompute=r, **kw) for r in (False, True))
    x = tf.random.stateless_normal([2, 8, 8, 3], [0, 1])
    y = tf.constant([0, 2])

    @tf.function
    def grads(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, model(x, training=True),
                                                                                   from_logits=True))
        return loss, tape.gradient(loss, model.trainable_weights)

    (loss_a, grads_a), (loss_b, grads_b) = grads(plain), grads(again)
    # The two graphs differ, so oneDNN may pick other kernels for them: float32 rounding, which BN over
    # batches of 2 at 2x2 pixels amplifies to ~3e-4 of a gradient's largest entry. A wrong gradient (a
    # missing path, statistics updated twice) is off by far more.
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
    assert len(grads_a) == len(grads_b) == len(plain.trainable_weights)
    for v, a, b in zip(plain.trainable_weights, grads_a, grads_b):
        assert b is not None, v.path
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-3 * np.abs(b).max(), err_msg=v.path)
    stats = lambda m: [w.numpy() for w in m.non_trainable_weights]
    for a, b in zip(stats(plain), stats(again)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert supernet.Supernet.from_config(again.get_config()).recompute


def test_cells_follow_the_genotype_walk(model):
    plans = walk.cell_plans('cifar', 4, 3)
    assert [(c.channels, c.reduction, c.reduction_prev) for c in model.cells_] == [
        (p.c, p.reduction, p.reduction_prev) for p in plans]
    assert model.reductions == (1, 2) and model.out_channels == plans[-1].c * search_space.NUM_NODES


@pytest.mark.parametrize('pc', [False, True])
def test_traced_shared_mixed_ops_give_the_eager_gradients_and_statistics(pc):
    """In a tf.function every MixedOp of one kind calls one shared traced function (weights and
    statistics passed in, updates passed out); eagerly each computes its math inline, as before the
    sharing. Same loss, same gradient for every weight and alpha/beta, same BN moving statistics, and
    one traced function per edge count and stride, not per layer or channel count. In
    discarded_statistics() the statistics stay."""
    kw = dict(partial_channels=2, edge_normalization=True) if pc else {}
    eager, traced = (supernet.build_supernet(4, 3, 3, 8, seed=0, **kw) for _ in range(2))
    x = tf.random.stateless_normal([3, 8, 8, 3], [0, 1])
    y = tf.constant([0, 2, 1])

    def grads(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, model(x, training=True),
                                                                                   from_logits=True))
        return loss, tape.gradient(loss, model.trainable_weights)

    supernet._SHARED_MIXED_OPS.clear()
    loss_a, grads_a = grads(eager)
    assert not supernet._SHARED_MIXED_OPS  # eagerly nothing is traced
    loss_b, grads_b = tf.function(grads)(traced)
    # One function per (edges, stride), for every cell's channel count and resolution.
    kinds = {(op.num_edges, op.strides) for cell in traced.cells_ for op in cell.mixed}
    assert len(kinds) < len({(op.channels, op.num_edges, op.strides) for cell in traced.cells_ for op in cell.mixed})
    assert len(supernet._SHARED_MIXED_OPS) == len(kinds)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    for v, a, b in zip(eager.trainable_weights, grads_a, grads_b):
        # oneDNN's fused graph kernels sum in another order than eager ops: float32 noise scales
        # with the tensor's largest entry, so tiny entries are held to that scale, not their own.
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max() + 1e-7, err_msg=v.path)
    for v, w in zip(eager.non_trainable_weights, traced.non_trainable_weights):
        np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-5, atol=1e-7, err_msg=v.path)

    before = [v.numpy().copy() for v in traced.non_trainable_weights]

    @tf.function
    def discarded():
        with supernet.discarded_statistics():
            return grads(traced)

    loss_c, grads_c = discarded()
    np.testing.assert_allclose(loss_b, loss_c, rtol=1e-6)  # the moving statistics do not enter in training
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, traced.non_trainable_weights))
    np.testing.assert_allclose(traced(x, training=False), tf.function(lambda: traced(x, training=False))(),
                               rtol=1e-5, atol=1e-6)  # inference reads the moving statistics alike


@pytest.mark.parametrize('size,strides', [(5, 1), (6, 2)])
def test_one_traced_mixed_op_serves_any_channel_count_and_resolution(size, strides):
    """Mixed ops of one edge count and stride share one traced function whatever their channels (4, 6) and
    resolution (odd 5x5 takes the dilated convs' other path): its output and gradients are the eager math's."""
    supernet._SHARED_MIXED_OPS.clear()
    for channels in (4, 6):
        op = supernet.MixedOp(channels, 2, strides, seed=channels)
        x = tf.random.stateless_normal([2, size, size, channels], [0, channels])
        weights = tf.nn.softmax(tf.random.stateless_normal([2, search_space.NUM_OPS], [1, channels]))
        op.build(x.shape)

        def run(x, weights, op=op):
            with tf.GradientTape() as tape:
                tape.watch(weights)
                y = op(x, weights, training=True)
                loss = tf.reduce_sum(tf.square(y) * tf.range(1., 1. + channels))
            return y, tape.gradient(loss, [weights] + op.trainable_weights)

        (y_a, grads_a), (y_b, grads_b) = run(x, weights), tf.function(run)(x, weights)
        assert y_b.shape == y_a.shape == (2, -(-size // strides), -(-size // strides), 2, channels)
        np.testing.assert_allclose(y_a, y_b, rtol=1e-4, atol=1e-5)
        for a, b in zip(grads_a, grads_b):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max() + 1e-7)
    assert len(supernet._SHARED_MIXED_OPS) == 1


@pytest.mark.parametrize('strides', [1, 2])
def test_max_pool_gradients_are_tfs(strides):
    """max_pool_3x3 re-runs the pooling for its gradient (so oneDNN pairs the two): first and second
    derivatives equal TensorFlow's own max pooling's."""
    x = tf.constant(np.random.default_rng(strides).normal(size=(2, 6, 6, 3)), tf.float32)

    def reference(x):
        if strides == 2:
            x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=x.dtype.min)
        return tf.nn.max_pool2d(x, 3, strides, 'VALID' if strides == 2 else 'SAME')

    def derivatives(pool):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                loss = tf.reduce_sum(tf.square(pool(x)))
            grad = inner.gradient(loss, x)
            total = tf.reduce_sum(grad * x)
        return loss, grad, outer.gradient(total, x)

    for a, b in zip(derivatives(lambda x: supernet.max_pool_3x3(x, strides)), derivatives(reference)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('size,k,strides,dilation', [(8, 3, 1, 2), (8, 5, 1, 2), (6, 3, 1, 1), (8, 5, 2, 1),
                                                     (8, 3, 2, 2), (7, 3, 1, 2), (7, 5, 1, 2)])
def test_depthwise_is_tfs_depthwise_conv_bit_for_bit(size, k, strides, dilation):
    """supernet.depthwise calls the native op (and writes out the space-to-batch of a dilation) instead of
    tf.nn.depthwise_conv2d: the same values and gradients, exactly; at an odd size it spreads the kernel's
    taps, the same sums in another order."""
    rng = np.random.default_rng(k)
    x = tf.constant(rng.normal(size=(2, size, size, 6)), tf.float32)
    kernel = tf.constant(rng.normal(size=(k, k, 6, 1)), tf.float32)

    def reference(x, kernel):
        if strides == 1:
            return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], 'SAME', dilations=[dilation, dilation])
        if dilation == 1:
            p = (k - 1) // 2
            return tf.nn.depthwise_conv2d(x, kernel, [1, 2, 2, 1], [[0, 0], [p, p], [p, p], [0, 0]])
        return tf.nn.depthwise_conv2d(x[:, ::2, ::2], kernel, [1, 1, 1, 1], 'SAME')

    results = []
    for fn in (lambda x, w: supernet.depthwise(x, w, strides, dilation), reference):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = fn(x, kernel)
            loss = tf.reduce_sum(y * y)
        results.append([y] + tape.gradient(loss, [x, kernel]))
    for a, b in zip(*results):
        if size % dilation and strides == 1:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
        else:
            np.testing.assert_array_equal(a, b)
