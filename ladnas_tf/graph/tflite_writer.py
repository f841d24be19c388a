"""The profiler's float32 TFLite file written directly from the genotype, without TensorFlow.

The TF converter turns the constant graph (constant.py) into a file fully determined by the genotype and
the setting. This module reproduces that file through the published TFLite schema (ai_edge_litert's
schema_py_generated, the flatbuffers object API) in two steps:

1. `_TFGraph` walks the network into the nodes the constant graph holds, named as TensorFlow names them
   (add, add_1, ..., Relu_3, depthwise_2/SpaceToBatchND): the names fix the operator order, because
   the converter imports the graph in reverse post-order of a depth-first search that visits a node's
   consumers by name.
2. `_convert` applies what the converter does to such a graph: `0 + x` dropped, batch norms folded into
   the convolution before them (a BN after a concatenation stays MUL + ADD), MatMul + BiasAdd as one
   FULLY_CONNECTED, common subexpressions merged (equal ReLUs, pools, slices, pads, sums and
   SPACE_TO_BATCH_NDs), a SPACE_TO_BATCH_ND -> DEPTHWISE -> BATCH_TO_SPACE_ND chain made one dilated
   depthwise conv unless the merged SPACE_TO_BATCH_ND feeds several, a ReLU fused into a single-use
   conv / add / fully-connected producer, equal small constants shared.

tests/test_tflite_writer.py and benchmarks/tflite_writer_equivalence.py check the result against the
converter: same operators in the same order, same options, tensor shapes and types, same outputs.
"""
import math

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from ladnas_tf.bad_input import BadInput
from ladnas_tf.graph.macs import network_macs
from ladnas_tf.graph.walk import Walk

OPS = schema.BuiltinOperator
# The converter records the oldest runtime that has every operator at its version: of ours, a dilated
# depthwise conv (version 2) needs 1.12.0, the rest (MEAN, STRIDED_SLICE, ... at version 1) 1.6.0.
MIN_RUNTIME_VERSION = {1: b'1.6.0', 2: b'1.12.0'}
COMMUTATIVE = (OPS.ADD, OPS.MUL)
SHIFT = dict(begin=(0, 1, 1, 0), end=(0, 0, 0, 0), strides=(1, 1, 1, 1), begin_mask=9, end_mask=15)


class WriterError(BadInput):
    """A genotype or setting the writer cannot express; the message names what is unsupported."""


class _Node:
    """One node of the constant TF graph; after `_convert`, one TFLite operator unless `alias` is set.

    kind: the TFLite operator it becomes; attrs: its options (hashable); consts: its constant inputs
    after the data input(s), as numpy arrays."""
    __slots__ = ('name', 'kind', 'inputs', 'shape', 'attrs', 'consts', 'alias', 'act', 'position')

    def __init__(self, name, kind, inputs, shape, attrs=(), consts=()):
        self.name, self.kind, self.inputs, self.shape = name, kind, inputs, shape
        self.attrs, self.consts = dict(attrs), list(consts)
        self.alias, self.act, self.position = None, False, 0

    def resolved(self):
        node = self
        while node.alias is not None:
            node = node.alias
        return node


def _ints(values, shape=None):
    return np.asarray(values, np.int32).reshape(shape if shape is not None else (-1,))


class _TFGraph(Walk):
    """The walk as the constant graph's nodes (constant.ConstantEmitter's ops, one node each).

    draw(shape) gives the next weight, in the walk's order and TF layout."""

    def __init__(self, draw):
        self.draw, self.nodes, self.counts = draw, [], {}
        self.params = 0  # as constant.ConstantEmitter counts them (BN's scale and offset included)

    def _name(self, base):
        """TensorFlow's unique names in a graph: base, base_1, base_2, ..."""
        count = self.counts.get(base, 0)
        self.counts[base] = count + 1
        return f'{base}_{count}' if count else base

    def _node(self, base, kind, inputs, shape, attrs=(), consts=(), name=None):
        node = _Node(name or self._name(base), kind, inputs, tuple(shape), attrs, consts)
        self.nodes.append(node)
        return node

    def _weight(self, *shape):
        self.params += math.prod(shape)
        w = np.asarray(self.draw(shape), np.float32)
        if w.shape != shape:
            raise WriterError(f'weight {len(self.nodes)} has shape {w.shape}, the network needs {shape}')
        return w

    def input(self, batch, size):
        return self._node('x', 'INPUT', [], (batch, size, size, 3))

    def bn(self, x):
        c = x.shape[-1]
        scale = self._weight(c)
        mul = self._node('mul', OPS.MUL, [x], x.shape, consts=[scale])
        offset = self._weight(c)
        add = self._node('add', OPS.ADD, [mul], x.shape, consts=[offset])
        if x.kind == OPS.CONV_2D:  # folded: the conv takes the scale and the offset as its bias
            x.consts = [x.consts[0] * scale.reshape(-1, 1, 1, 1), offset]
            mul.alias = add.alias = x
        return add

    def conv(self, x, filters, k, stride=1, dilation=1, depthwise=False):
        pad = dilation * (k - 1) // 2
        if stride > 1 and dilation == 1 and pad:
            b, h, w, c = x.shape
            x = self._node('Pad', OPS.PAD, [x], (b, h + 2 * pad, w + 2 * pad, c),
                           consts=[_ints([0, 0, pad, pad, pad, pad, 0, 0], (4, 2))])
        valid = stride > 1 and dilation == 1
        c = x.shape[-1]
        weight = np.ascontiguousarray(self._weight(k, k, c, 1 if depthwise else filters).transpose(3, 0, 1, 2))
        if depthwise and dilation > 1:
            y = self._dilated(x, weight, k, dilation)
        else:
            size = [(n - k) // stride + 1 if valid else n for n in x.shape[1:3]]
            kind = OPS.DEPTHWISE_CONV_2D if depthwise else OPS.CONV_2D
            out = c if depthwise else filters
            y = self._node('depthwise' if depthwise else 'convolution', kind, [x], (x.shape[0], *size, out),
                           dict(padding=schema.Padding.VALID if valid else schema.Padding.SAME,
                                stride=stride, dilation=1), [weight, np.zeros(out, np.float32)])
        return self._slice(y, stride) if stride > 1 and dilation > 1 else y

    def _dilated(self, x, weight, k, dilation):
        """tf.nn.depthwise_conv2d's dilated SAME conv: SPACE_TO_BATCH_ND, a VALID conv, BATCH_TO_SPACE_ND."""
        b, h, w, c = x.shape
        total = (k - 1) * dilation
        pads = [(total // 2, total - total // 2 + (-(n + total)) % dilation) for n in (h, w)]
        crops = [(0, (-(n + total)) % dilation) for n in (h, w)]
        scope = self._name('depthwise')
        block = _ints([dilation, dilation])
        padded = [(n + p0 + p1) // dilation for n, (p0, p1) in zip((h, w), pads)]
        s2b = self._node(None, OPS.SPACE_TO_BATCH_ND, [x], (b * dilation ** 2, *padded, c),
                         consts=[block, _ints(pads, (2, 2))], name=f'{scope}/SpaceToBatchND')
        inner = [n - k + 1 for n in padded]
        conv = self._node(None, OPS.DEPTHWISE_CONV_2D, [s2b], (s2b.shape[0], *inner, c),
                          dict(padding=schema.Padding.VALID, stride=1, dilation=1),
                          [weight, np.zeros(c, np.float32)], name=scope)
        return self._node(None, OPS.BATCH_TO_SPACE_ND, [conv], x.shape, dict(dilation=dilation),
                          [block, _ints(crops, (2, 2))], name=f'{scope}/BatchToSpaceND')

    def _slice(self, x, stride, begin=(0, 0, 0, 0), end=(0, 0, 0, 0), strides=None, begin_mask=15,
               end_mask=15):
        strides = strides or (1, stride, stride, 1)
        b, h, w, c = x.shape
        shape = (b, *(math.ceil((n - s0) / s) for n, s0, s in zip((h, w), begin[1:3], strides[1:3])), c)
        return self._node('strided_slice', OPS.STRIDED_SLICE, [x], shape,
                          dict(begin_mask=begin_mask, end_mask=end_mask),
                          [_ints(begin), _ints(end), _ints(strides)])

    def relu(self, x):
        return self._node('Relu', OPS.RELU, [x], x.shape)

    def pool(self, x, kind, stride):
        base, op = ('MaxPool2d', OPS.MAX_POOL_2D) if kind == 'max' else ('AvgPool2D', OPS.AVERAGE_POOL_2D)
        y = self._node(base, op, [x], x.shape)
        return self._slice(y, stride) if stride > 1 else y

    def shift(self, x):
        return self._slice(x, 1, **SHIFT)

    def add(self, xs):
        total = None
        for x in xs:  # sum(): from 0, lazily, so names are taken in the constant graph's order
            if total is None:
                total = self._node('add', None, [x], x.shape)
                total.alias = x
            else:
                total = self._node('add', OPS.ADD, [total, x], x.shape)
        return total

    def concat(self, xs):
        b, h, w, _ = xs[0].shape
        for x in xs:
            if x.shape[:3] != (b, h, w):
                raise WriterError(f'cannot concatenate maps of shapes {xs[0].shape} and {x.shape} '
                                  '(a factorized reduce of an odd map size)')
        return self._node('concat', OPS.CONCATENATION, list(xs), (b, h, w, sum(x.shape[3] for x in xs)))

    def classifier(self, x, num_classes):
        b, c = x.shape[0], x.shape[3]
        mean = self._node('Mean', OPS.MEAN, [x], (b, c), consts=[_ints([1, 2])])
        weight = np.ascontiguousarray(self._weight(c, num_classes).T)
        matmul = self._node('MatMul', OPS.FULLY_CONNECTED, [mean], (b, num_classes))
        matmul.consts = [weight, self._weight(num_classes)]
        bias_add = self._node('BiasAdd', None, [matmul], (b, num_classes))
        bias_add.alias = matmul
        return bias_add


FUSES_RELU = (OPS.CONV_2D, OPS.DEPTHWISE_CONV_2D, OPS.ADD, OPS.FULLY_CONNECTED)


def _reverse_post_order(nodes, root):
    """The converter's import order: a depth-first search from the input that pushes a node's consumers
    sorted by name (so the last name is explored first), reversed post-order. Sets `position`."""
    consumers = {id(n): [] for n in nodes}
    for node in nodes:
        for i in node.inputs:
            consumers[id(i)].append(node)
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        node, leave = stack.pop()
        if leave:
            order.append(node)
        elif id(node) not in visited:
            visited.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in sorted(consumers[id(node)], key=lambda n: n.name)
                         if id(c) not in visited)
    order.reverse()
    for position, node in enumerate(order):
        node.position = position
    return order


def _merge_common(order):
    """MLIR's CSE: in import order, a node equal to an earlier one (kind, inputs, options, constants)
    becomes that one."""
    seen = {}
    for node in order:
        if node.alias is not None or node.kind in (None, 'INPUT'):
            continue
        inputs = [id(i.resolved()) for i in node.inputs]  # CSE compares commutative operands as a set
        inputs = sorted(inputs) if node.kind in COMMUTATIVE else inputs
        key = (node.kind, tuple(inputs), tuple(sorted(node.attrs.items())))
        twins = seen.setdefault(key, [])
        twin = next((t for t in twins if _same_consts(t.consts, node.consts)), None)
        if twin is None:
            twins.append(node)
        else:
            node.alias = twin


def _same_consts(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


def _use_counts(live):
    uses = {}
    for node in live:
        for i in node.inputs:
            uses[id(i.resolved())] = uses.get(id(i.resolved()), 0) + 1
    return uses


def _fuse_dilated(live, uses):
    """SPACE_TO_BATCH_ND -> DEPTHWISE -> BATCH_TO_SPACE_ND as one dilated SAME depthwise conv, unless the
    SPACE_TO_BATCH_ND (merged by CSE) feeds several convs."""
    for b2s in (n for n in live if n.kind == OPS.BATCH_TO_SPACE_ND):
        conv = b2s.inputs[0]
        s2b = conv.inputs[0].resolved()
        if uses[id(s2b)] == 1:
            conv.inputs, conv.shape = s2b.inputs, b2s.shape
            conv.attrs = dict(padding=schema.Padding.SAME, stride=1, dilation=b2s.attrs['dilation'])
            s2b.alias = s2b.inputs[0]
            b2s.alias = conv


def _fuse_relu(live, uses):
    for relu in (n for n in live if n.kind == OPS.RELU and n.alias is None):
        producer = relu.inputs[0].resolved()
        if producer.kind in FUSES_RELU and uses[id(producer)] == 1:
            producer.act = True
            relu.alias = producer


def _convert(nodes, root):
    """The TFLite operators the converter makes of the graph, in its order."""
    order = _reverse_post_order(nodes, root)
    _merge_common(order)
    live = [n for n in order if n.alias is None and n.kind not in (None, 'INPUT')]
    uses = _use_counts(live)
    _fuse_dilated(live, uses)
    _fuse_relu(live, uses)
    return [n for n in live if n.alias is None]


class _AlignedBuffer(schema.BufferT):
    """A buffer whose data starts on a 16-byte boundary, as the converter aligns constant data."""

    def Pack(self, builder):  # noqa: N802 (the object API's name)
        data = None
        if self.data is not None:
            builder.StartVector(1, len(self.data), 16)
            builder.head -= len(self.data)
            builder.Bytes[builder.head:builder.head + len(self.data)] = memoryview(self.data)
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


def _options(node):
    """(BuiltinOptions type, options object) of an operator, as the converter sets them."""
    act = schema.ActivationFunctionType.RELU if node.act else schema.ActivationFunctionType.NONE
    kind, attrs, types = node.kind, node.attrs, schema.BuiltinOptions
    if kind in (OPS.CONV_2D, OPS.DEPTHWISE_CONV_2D):
        options = schema.Conv2DOptionsT() if kind == OPS.CONV_2D else schema.DepthwiseConv2DOptionsT()
        options.padding, options.fusedActivationFunction = attrs['padding'], act
        options.strideW = options.strideH = attrs['stride']
        options.dilationWFactor = options.dilationHFactor = attrs['dilation']
        if kind == OPS.CONV_2D:
            return types.Conv2DOptions, options
        options.depthMultiplier = 1
        return types.DepthwiseConv2DOptions, options
    if kind in (OPS.MAX_POOL_2D, OPS.AVERAGE_POOL_2D):
        options = schema.Pool2DOptionsT()
        options.padding, options.strideW, options.strideH = schema.Padding.SAME, 1, 1
        options.filterWidth = options.filterHeight = 3
        return types.Pool2DOptions, options
    if kind == OPS.STRIDED_SLICE:
        options = schema.StridedSliceOptionsT()
        options.beginMask, options.endMask = attrs['begin_mask'], attrs['end_mask']
        return types.StridedSliceOptions, options
    if kind == OPS.CONCATENATION:
        options = schema.ConcatenationOptionsT()
        options.axis = -1
        return types.ConcatenationOptions, options
    simple = {OPS.ADD: (types.AddOptions, schema.AddOptionsT), OPS.MUL: (types.MulOptions, schema.MulOptionsT),
              OPS.FULLY_CONNECTED: (types.FullyConnectedOptions, schema.FullyConnectedOptionsT),
              OPS.PAD: (types.PadOptions, schema.PadOptionsT), OPS.MEAN: (types.ReducerOptions, schema.ReducerOptionsT)}
    if kind not in simple:
        return types.NONE, None
    option_type, cls = simple[kind]
    options = cls()
    if hasattr(options, 'fusedActivationFunction'):
        options.fusedActivationFunction = act
    return option_type, options


class _Model:
    """Tensors and buffers of the file being assembled: buffer 0 empty, one buffer per tensor."""

    def __init__(self):
        self.tensors, self.buffers, self.shared = [], [_AlignedBuffer()], {}

    def tensor(self, shape, dtype=np.float32, data=None):
        tensor = schema.TensorT()
        tensor.shape = np.asarray(shape, np.int32)
        tensor.type = schema.TensorType.INT32 if dtype == np.int32 else schema.TensorType.FLOAT32
        tensor.buffer = len(self.buffers)
        tensor.name = f't{len(self.tensors)}'.encode()
        buffer = _AlignedBuffer()
        buffer.data = data
        self.tensors.append(tensor)
        self.buffers.append(buffer)
        return len(self.tensors) - 1

    def constant(self, array):
        """Equal constants share one tensor, as the converter's CSE of constants leaves them (arrays
        with equal ends are compared whole, so the weights are not hashed)."""
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        key = (array.dtype.str, array.shape, raw[:64].tobytes(), raw[-64:].tobytes())
        twins = self.shared.setdefault(key, [])
        for index, twin in twins:
            if np.array_equal(twin, raw):
                return index
        twins.append((self.tensor(array.shape, array.dtype, raw), raw))
        return twins[-1][0]

    def metadata(self, name, data):
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(self.buffers)
        buffer = _AlignedBuffer()
        buffer.data = data
        self.buffers.append(buffer)
        return entry


def _serialize(ops, root, output):
    model = _Model()
    index = {id(root): model.tensor(root.shape)}
    for op in ops:  # the converter numbers constants before intermediate tensors
        op.consts = [model.constant(c) for c in op.consts]
    codes, operators = {}, []
    for op in ops:
        index[id(op)] = model.tensor(op.shape)
        operator = schema.OperatorT()
        operator.opcodeIndex = codes.setdefault(op.kind, len(codes))
        operator.inputs = np.asarray([index[id(i.resolved())] for i in op.inputs] + op.consts, np.int32)
        operator.outputs = np.asarray([index[id(op)]], np.int32)
        operator.builtinOptionsType, operator.builtinOptions = _options(op)
        operators.append(operator)
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.name = model.tensors, operators, b'main'
    subgraph.inputs = np.asarray([index[id(root)]], np.int32)
    subgraph.outputs = np.asarray([index[id(output.resolved())]], np.int32)
    result = schema.ModelT()
    result.version, result.description, result.subgraphs = 3, b'ladnas_tf tflite_writer', [subgraph]
    result.operatorCodes = [_opcode(kind, ops) for kind in codes]
    runtime = MIN_RUNTIME_VERSION[max(code.version for code in result.operatorCodes)]
    result.metadata = [model.metadata(b'min_runtime_version', runtime.ljust(16, b'\0'))]
    result.buffers = model.buffers
    size = sum(len(b.data) + 16 for b in model.buffers if b.data is not None)
    builder = flatbuffers.Builder(size + 512 * (len(model.tensors) + len(operators)) + 4096)  # never grows
    builder.Finish(result.Pack(builder), file_identifier=b'TFL3')
    return bytes(memoryview(builder.Bytes)[builder.Head():])


def _opcode(kind, ops):
    """Versions as the converter sets them for float32: a dilated depthwise conv needs version 2."""
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode = kind, min(kind, 127)
    dilated = any(op.kind == kind == OPS.DEPTHWISE_CONV_2D and op.attrs['dilation'] > 1 for op in ops)
    code.version = 2 if dilated else 1
    return code


def write_tflite(genotype, setting='cifar', channels=36, num_cells=20, num_classes=10, image_size=32,
                 batch_size=1, seed=0, weights=None):
    """The float32 .tflite file (bytes) the converter makes of constant.concrete_function's graph.

    weights: None, the constant graph's seeded weights (N(0, 0.1) drawn in float64: the converter's
    file exactly); 'fast', float32 N(0, 0.1) draws from the same seed (other values, several times
    faster: for timing, where values do not matter); or float32 arrays in the walk's order and TF
    layout (conv k x k x in x out, depthwise k x k x c x 1, BN scale then offset, classifier
    in x classes then bias)."""
    walked = (genotype, setting, channels, num_cells, num_classes, image_size)
    return _write(walked, batch_size, seed, weights)[0]


def genotype_to_tflite(genotype, setting='cifar', channels=36, num_cells=20, num_classes=10, image_size=32,
                       batch_size=1, seed=0):
    """(file, params, MACs per image) as constant.genotype_to_tflite gives them, for timing: the
    converter's file with other weight values ('fast'), which latency does not depend on."""
    walked = (genotype, setting, channels, num_cells, num_classes, image_size)
    data, params = _write(walked, batch_size, seed, 'fast')
    return data, params, network_macs(*walked)


def _write(walked, batch_size, seed, weights):
    """(file, params) of the walk's (genotype, setting, channels, num_cells, num_classes, image_size)."""
    genotype, setting, _, _, _, image_size = walked
    if setting not in ('cifar', 'imagenet'):
        raise WriterError(f"the TFLite writer knows settings 'cifar' and 'imagenet', not {setting!r}")
    rng = np.random.default_rng(seed)
    if weights is None:
        graph = _TFGraph(lambda shape: rng.normal(0, 0.1, shape).astype(np.float32))
    elif isinstance(weights, str) and weights == 'fast':
        graph = _TFGraph(lambda shape: rng.standard_normal(shape, np.float32) * np.float32(0.1))
    else:
        given = iter(weights)
        graph = _TFGraph(lambda shape: next(given))
    x = graph.input(batch_size, image_size)
    output = graph.network(x, *walked)
    return _serialize(_convert(graph.nodes, x), x, output), graph.params
