"""The profiler's float32 TFLite file written directly from the genotype, without TensorFlow.

The TF converter turns the constant graph (constant.py) into a file fully determined by the genotype and
the setting. This module reproduces that file, laid out by the published TFLite schema (schema.fbs, as
ai_edge_litert's schema_py_generated states its slots and enums), in three steps:

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
3. `_serialize` lays the flatbuffer out front to back (`_Flat`): the ~1,900 tensors and buffers as
   numpy records, shared vtables and option tables, and weights for timing ('fast', `_Fresh`) drawn
   in one vectorised call straight into the file (the flatbuffers object API took ~60 ms a file).

tests/test_tflite_writer.py and benchmarks/tflite_writer_equivalence.py check the result against the
converter: same operators in the same order, same options, tensor shapes and types, same outputs.
"""
import math
import struct

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

    draw(shape) gives the next weight, in the walk's order and TF layout; without it, weights are _Fresh."""

    def __init__(self, draw=None):
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

    def _weight(self, *shape, order=None):
        """The next weight, drawn in TF layout and given in TFLite's (its axes in `order`)."""
        self.params += math.prod(shape)
        if self.draw is None:
            return _Fresh(shape if order is None else [shape[a] for a in order])
        w = np.asarray(self.draw(shape), np.float32)
        if w.shape != shape:
            raise WriterError(f'weight {len(self.nodes)} has shape {w.shape}, the network needs {shape}')
        return w if order is None else np.ascontiguousarray(w.transpose(order))

    def input(self, batch, size):
        return self._node('x', 'INPUT', [], (batch, size, size, 3))

    def bn(self, x):
        c = x.shape[-1]
        scale = self._weight(c)
        mul = self._node('mul', OPS.MUL, [x], x.shape, consts=[scale])
        offset = self._weight(c)
        add = self._node('add', OPS.ADD, [mul], x.shape, consts=[offset])
        if x.kind == OPS.CONV_2D:  # folded: the conv takes the scale and the offset as its bias
            x.consts = [_fold(x.consts[0], scale), offset]
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
        weight = self._weight(k, k, c, 1 if depthwise else filters, order=(3, 0, 1, 2))
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
        weight = self._weight(c, num_classes, order=(1, 0))
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
    return len(a) == len(b) and all(x is y or _equal_arrays(x, y) for x, y in zip(a, b))


def _equal_arrays(x, y):
    """Equal constants; fresh weights are never equal to another."""
    arrays = not isinstance(x, _Fresh) and not isinstance(y, _Fresh)
    return arrays and x.shape == y.shape and np.array_equal(x, y)


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


class _Fresh:
    """A float32 weight of this shape in TFLite layout, drawn only when the file is written
    (weights='fast'): a file's fresh weights are one vectorised draw straight into its bytes. folded: a
    conv's weight with the BN scale after it folded in (its output channels are scaled when drawn)."""
    __slots__ = ('shape', 'folded')

    def __init__(self, shape, folded=False):
        self.shape, self.folded = tuple(shape), folded


def _fold(weight, scale):
    """A conv's weight times the BN scale that follows it, per output channel (TFLite layout: first axis)."""
    if isinstance(weight, _Fresh):
        return _Fresh(weight.shape, folded=True)
    return weight * scale.reshape(-1, 1, 1, 1)


_SIZE = {'b': 1, 'B': 1, 'i': 4, 'I': 4, 'R': 4}


class _Flat:
    """A flatbuffer written front to back: a table's children follow it, so every uoffset is positive.

    `ref(key)` leaves a uoffset to patch, `place(key)` says where that key's object starts; `finish`
    patches them all at once. Tables of one layout share a vtable; equal option tables are one table."""

    def __init__(self):
        self.data = bytearray(struct.pack('<I4s', 0, b'TFL3'))
        self.refs, self.ref_keys, self.where, self.vtables, self.keys = [], [], {}, {}, 0

    def key(self):
        self.keys += 1
        return self.keys

    def align(self, n, extra=0):
        """Pads so that the position plus `extra` is a multiple of n."""
        self.data += bytes(-(len(self.data) + extra) % n)

    def place(self, key):
        self.where[key] = len(self.data)

    def ref(self, key):
        self.refs.append(len(self.data))
        self.ref_keys.append(key)
        self.data += b'\0\0\0\0'

    def vtable(self, offsets, size):
        """The position of the vtable of a table with these field offsets (by slot) and inline size."""
        layout = struct.pack(f'<{2 + len(offsets)}H', 4 + 2 * len(offsets), size, *offsets)
        if layout not in self.vtables:
            self.align(4)
            self.vtables[layout] = len(self.data)
            self.data += layout
        return self.vtables[layout]

    def table(self, fields, key=None):
        """A table of (slot, format, value) fields (format b, B, i, I, or R: value is the key of the
        object referenced); 4-byte fields first, so each is aligned."""
        fields = sorted(fields, key=lambda f: -_SIZE[f[1]])
        offsets, at = {}, 4
        for slot, fmt, _ in fields:
            offsets[slot], at = at, at + _SIZE[fmt]
        slots = max(offsets, default=-1) + 1
        vtable = self.vtable([offsets.get(s, 0) for s in range(slots)], at + -at % 4)
        self.align(4)
        position = len(self.data)
        if key is not None:
            self.place(key)
        self.data += struct.pack('<i', position - vtable)
        for _, fmt, value in fields:
            if fmt == 'R':
                self.ref(value)
            else:
                self.data += struct.pack('<' + fmt, value)
        self.align(4)

    def ints(self, values, key):
        self.align(4)
        self.place(key)
        self.data += struct.pack(f'<I{len(values)}i', len(values), *values)

    def string(self, text, key):
        self.align(4)
        self.place(key)
        self.data += struct.pack('<I', len(text)) + text + b'\0'

    def vector(self, keys, key):
        """A vector of tables (or strings) by their keys."""
        self.align(4)
        self.place(key)
        self.data += struct.pack('<I', len(keys))
        for k in keys:
            self.ref(k)

    def finish(self, root, tail):
        """The file: these bytes, their uoffsets patched, then `tail` (bytes with no uoffsets to patch)."""
        self.align(4)
        positions = np.asarray(self.refs, np.int64)
        targets = np.asarray([self.where[k] for k in self.ref_keys], np.int64)
        words = np.frombuffer(self.data, np.uint32)
        words[positions // 4] = targets - positions
        words[0] = self.where[root]
        return b''.join((self.data, tail))


def _options(node):
    """(BuiltinOptions type, its table's fields) of an operator, as the converter sets them."""
    act = schema.ActivationFunctionType.RELU if node.act else schema.ActivationFunctionType.NONE
    kind, attrs, types = node.kind, node.attrs, schema.BuiltinOptions
    if kind == OPS.CONV_2D:  # padding, stride_w, stride_h, activation, dilation_w, dilation_h
        return types.Conv2DOptions, ((0, 'b', attrs['padding']), (1, 'i', attrs['stride']),
                                     (2, 'i', attrs['stride']), (3, 'b', act), (4, 'i', attrs['dilation']),
                                     (5, 'i', attrs['dilation']))
    if kind == OPS.DEPTHWISE_CONV_2D:  # the same, with depth_multiplier (1) before the activation
        return types.DepthwiseConv2DOptions, ((0, 'b', attrs['padding']), (1, 'i', attrs['stride']),
                                              (2, 'i', attrs['stride']), (3, 'i', 1), (4, 'b', act),
                                              (5, 'i', attrs['dilation']), (6, 'i', attrs['dilation']))
    if kind in (OPS.MAX_POOL_2D, OPS.AVERAGE_POOL_2D):  # padding, strides, filter width and height
        return types.Pool2DOptions, ((0, 'b', schema.Padding.SAME), (1, 'i', 1), (2, 'i', 1), (3, 'i', 3),
                                     (4, 'i', 3))
    if kind == OPS.STRIDED_SLICE:
        return types.StridedSliceOptions, ((0, 'i', attrs['begin_mask']), (1, 'i', attrs['end_mask']))
    if kind == OPS.CONCATENATION:
        return types.ConcatenationOptions, ((0, 'i', -1),)
    with_act = {OPS.ADD: types.AddOptions, OPS.MUL: types.MulOptions,
                OPS.FULLY_CONNECTED: types.FullyConnectedOptions}
    if kind in with_act:
        return with_act[kind], ((0, 'b', act),)
    return {OPS.PAD: types.PadOptions, OPS.MEAN: types.ReducerOptions}.get(kind, types.NONE), ()


TENSOR_TYPES = {np.dtype(np.float32): schema.TensorType.FLOAT32, np.dtype(np.int32): schema.TensorType.INT32,
                np.dtype(np.int8): schema.TensorType.INT8}


class _Model:
    """Tensors and buffers of the file being assembled: buffer 0 empty, one buffer per tensor.

    tensors: (shape, TensorType); data: per buffer, None, bytes, or a _Fresh weight."""

    def __init__(self):
        self.tensors, self.data, self.shared = [], [None], {}
        self.quantization = []  # per tensor: None, or (scales, zero points, quantized dimension) for int8

    def tensor(self, shape, dtype=np.float32, data=None, quantization=None):
        self.tensors.append((shape, TENSOR_TYPES[np.dtype(dtype)]))
        self.data.append(data)
        self.quantization.append(quantization)
        return len(self.tensors) - 1

    def constant(self, array):
        """Equal constants share one tensor, as the converter's CSE of constants leaves them (arrays
        with equal ends are compared whole, so the weights are not hashed); fresh weights are unequal."""
        if isinstance(array, _Fresh):
            return self.tensor(array.shape, np.float32, array)
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        key = (array.dtype.str, array.shape, raw[:64].tobytes(), raw[-64:].tobytes())
        twins = self.shared.setdefault(key, [])
        for index, twin in twins:
            if np.array_equal(twin, raw):
                return index
        twins.append((self.tensor(array.shape, array.dtype, raw), raw))
        return twins[-1][0]


# A tensor table: shape (slot 0), type (1), buffer (2), name (3) at these offsets of its 20 bytes; an int8
# file's tables have 24, quantization (slot 4) at 16 (unset in the vtable of tensors without it).
TENSOR = np.dtype([('vtable', '<i4'), ('shape', '<u4'), ('buffer', '<u4'), ('name', '<u4'), ('type', 'u1'),
                   ('pad', 'V3')])
TENSOR_FIELDS = ([4, 16, 8, 12], TENSOR.itemsize)
QUANTIZED_TENSOR = np.dtype([('vtable', '<i4'), ('shape', '<u4'), ('buffer', '<u4'), ('name', '<u4'),
                             ('quantization', '<u4'), ('type', 'u1'), ('pad', 'V3')])
QUANTIZED_TENSOR_FIELDS = ([4, 20, 8, 12, 16], [4, 20, 8, 12]), QUANTIZED_TENSOR.itemsize


def _tensors(flat, tensors, key, quantization=None):
    """The subgraph's tensors: a vector, its tables in one numpy record array, then shapes and names
    (then, given `quantization`, per tensor None or (scales, zero points, quantized dimension), their
    QuantizationParameters tables)."""
    if quantization is None:
        layout, vtable = TENSOR, flat.vtable(*TENSOR_FIELDS)
    else:
        (with_q, without_q), size = QUANTIZED_TENSOR_FIELDS
        layout = QUANTIZED_TENSOR
        quantized = np.asarray([q is not None for q in quantization])
        vtable = np.where(quantized, flat.vtable(with_q, size), flat.vtable(without_q, size))
    flat.vector([], key)  # its length and offsets, patched below
    count = len(tensors)
    start = len(flat.data)
    flat.data += bytes(4 * count)
    tables = np.zeros(count, layout)
    at = start + 4 * count
    table_at = at + np.arange(count) * layout.itemsize
    parts, shapes, names = [], np.empty(count, np.int64), np.empty(count, np.int64)
    position = at + count * layout.itemsize
    for i, (shape, _) in enumerate(tensors):
        name = b't%d' % i
        shapes[i], names[i] = position, position + 4 + 4 * len(shape)
        part = struct.pack(f'<I{len(shape)}iI', len(shape), *shape, len(name)) + name
        part += bytes(4 - len(name) % 4)  # the string's terminating zero and padding
        parts.append(part)
        position += len(part)
    tables['vtable'] = table_at - vtable
    tables['shape'] = shapes - (table_at + 4)
    tables['buffer'] = np.arange(1, count + 1)  # _Model gives tensor i buffer i + 1
    tables['name'] = names - (table_at + 12)
    tables['type'] = [kind for _, kind in tensors]
    struct.pack_into('<I', flat.data, start - 4, count)
    flat.data[start:at] = (table_at - (start + 4 * np.arange(count))).astype('<u4').tobytes()
    flat.data += tables.tobytes()
    flat.data += b''.join(parts)
    if quantization is not None:
        _quantization(flat, quantization, table_at + 16)


def _quantization(flat, quantization, fields):
    """QuantizationParameters tables (scale, zero_point, quantized_dimension), equal ones shared, for the
    tensors whose quantization field is at `fields` (positions in flat.data)."""
    tables = {}
    for q, field in zip(quantization, fields):
        if q is None:
            continue
        scales, zero_points, dimension = q
        table = tables.get((scales.tobytes(), zero_points.tobytes(), dimension))
        if table is None:
            table = tables[scales.tobytes(), zero_points.tobytes(), dimension] = flat.key()
            scale_key, zero_key = flat.key(), flat.key()
            flat.table(((2, 'R', scale_key), (3, 'R', zero_key), (6, 'i', dimension)), table)
            flat.place(scale_key)
            flat.data += struct.pack('<I', len(scales)) + scales.astype('<f4').tobytes()
            flat.align(8, extra=4)  # int64 zero points: the elements 8-byte aligned
            flat.place(zero_key)
            flat.data += struct.pack('<I', len(zero_points)) + zero_points.astype('<i8').tobytes()
        flat.refs.append(int(field))
        flat.ref_keys.append(table)


def _buffers(flat, data, rng, key):
    """The buffers: an empty table shared by those without data, a table for each other, then their data
    16-byte aligned, fresh weights first (_fresh). Returns that data, which follows flat.data in the
    file: a zeroed array, so that the file's one copy is the join of the two."""
    full = sorted((i for i, d in enumerate(data) if d is not None), key=lambda i: not isinstance(data[i], _Fresh))
    sizes = [4 * math.prod(data[i].shape) if isinstance(data[i], _Fresh) else len(data[i]) for i in full]
    vtables = flat.vtable([], 4), flat.vtable([4], 8)
    flat.vector([], key)
    vector = len(flat.data)
    empty = vector + 4 * len(data)
    tables = empty + 4 + 8 * np.arange(len(full))
    start = empty + 4 + 8 * len(full)
    lengths, at = [], start
    for size in sizes:
        at += -(at + 4) % 16
        lengths.append(at)
        at += 4 + size
    targets = np.full(len(data), empty, np.int64)
    targets[full] = tables
    flat.data += bytes(start - vector)
    words = np.frombuffer(flat.data, np.int32)
    words[vector // 4 - 1] = len(data)
    words[vector // 4:empty // 4] = targets - (vector + 4 * np.arange(len(data)))
    words[empty // 4] = empty - vtables[0]
    words[tables // 4] = tables - vtables[1]
    words[tables // 4 + 1] = np.asarray(lengths) - (tables + 4)
    tail = np.zeros(at + -at % 4 - start, np.uint8)
    lengths = np.asarray(lengths, np.int64) - start  # in the tail from here on
    fresh = sum(isinstance(data[i], _Fresh) for i in full)
    if fresh:
        _fresh(tail.view(np.float32), [(lengths[j] // 4 + 1, data[full[j]]) for j in range(fresh)], rng)
    tail.view(np.int32)[lengths // 4] = sizes  # after the draw, which covered those of fresh weights
    for i, length, size in zip(full[fresh:], lengths[fresh:], sizes[fresh:]):
        tail[length + 4:length + 4 + size] = np.frombuffer(data[i], np.uint8)
    return tail


def _fresh(floats, placed, rng):
    """Fresh weights, each (index of its first float, _Fresh) in `floats` in order: one uniform draw of
    standard deviation 0.1 over them all, and the rows of folded ones scaled by a second such draw, as
    the converter's folded weights are products of two N(0, 0.1) draws (magnitudes as the timed file's)."""
    start, last = placed[0][0], placed[-1]
    _uniform(floats[start:last[0] + math.prod(last[1].shape)], rng)
    folded = [(at, weight.shape) for at, weight in placed if weight.folded]
    scales = _uniform(np.empty(sum(shape[0] for _, shape in folded), np.float32), rng)
    row = 0
    for at, shape in folded:
        floats[at:at + math.prod(shape)].reshape(shape[0], -1)[...] *= scales[row:row + shape[0], None]
        row += shape[0]


def _uniform(out, rng):
    """`out` filled with uniform float32 of mean 0 and standard deviation 0.1, in place."""
    rng.random(out=out, dtype=np.float32)
    out -= np.float32(0.5)
    out *= np.float32(0.1 * math.sqrt(12))
    return out


def _operators(flat, ops, index, codes, key):
    """The operators, then their input and output lists, then their (shared) option tables."""
    op_keys = [flat.key() for _ in ops]
    flat.vector(op_keys, key)
    lists, options = [], {}
    for op, op_key in zip(ops, op_keys):
        kind, fields = _options(op)
        inputs, outputs = flat.key(), flat.key()
        lists.append((inputs, [index[id(i.resolved())] for i in op.inputs] + op.consts))
        lists.append((outputs, [index[id(op)]]))
        table = [(0, 'I', codes.setdefault(op.kind, len(codes))), (1, 'R', inputs), (2, 'R', outputs),
                 (3, 'B', kind)]
        if kind != schema.BuiltinOptions.NONE:
            table.append((4, 'R', options.setdefault((kind, fields), flat.key())))
        flat.table(table, op_key)
    for list_key, values in lists:
        flat.ints(values, list_key)
    for (_, fields), options_key in options.items():
        flat.table(fields, options_key)


def _serialize(ops, root, output, rng):
    """The float32 file of the converted operators."""
    model, index = _number(ops, root)
    return _lay_out(ops, root, output, model, index, rng, _version, _min_runtime_version)


def _min_runtime_version(versions):
    return MIN_RUNTIME_VERSION[max(versions.values())]


def _lay_out(ops, root, output, model, index, rng, version, runtime, quantized=False):
    """The file: the Model table, its one SubGraph (tensors, operators), operator codes, metadata, buffers.
    version(kind, ops): an operator code's version; runtime({kind: version}): min_runtime_version."""
    flat, codes = _Flat(), {}
    k = {name: flat.key() for name in ('model', 'codes', 'subgraphs', 'description', 'buffers', 'metadata',
                                       'subgraph', 'tensors', 'inputs', 'outputs', 'operators', 'main')}
    flat.table(((0, 'I', 3), (1, 'R', k['codes']), (2, 'R', k['subgraphs']), (3, 'R', k['description']),
                (4, 'R', k['buffers']), (6, 'R', k['metadata'])), k['model'])
    flat.vector([k['subgraph']], k['subgraphs'])
    flat.table(((0, 'R', k['tensors']), (1, 'R', k['inputs']), (2, 'R', k['outputs']), (3, 'R', k['operators']),
                (4, 'R', k['main'])), k['subgraph'])
    flat.ints([index[id(root)]], k['inputs'])
    flat.ints([index[id(output.resolved())]], k['outputs'])
    flat.string(b'main', k['main'])
    _tensors(flat, model.tensors, k['tensors'], model.quantization if quantized else None)
    _operators(flat, ops, index, codes, k['operators'])
    versions = _operator_codes(flat, codes, ops, k['codes'], version)
    flat.string(b'ladnas_tf tflite_writer', k['description'])
    model.data.append(runtime(versions).ljust(16, b'\0'))
    _metadata(flat, b'min_runtime_version', len(model.data) - 1, k['metadata'])
    return flat.finish(k['model'], _buffers(flat, model.data, rng, k['buffers']))


def _number(ops, root):
    """(_Model, tensor index by node id): the input, then constants, then intermediate tensors, as the
    converter numbers them."""
    model = _Model()
    index = {id(root): model.tensor(root.shape)}
    for op in ops:
        op.consts = [model.constant(c) for c in op.consts]
    for op in ops:
        index[id(op)] = model.tensor(op.shape)
    return model, index


def _operator_codes(flat, codes, ops, key, version):
    """The operator codes, in the order of first use; returns {kind: version}."""
    code_keys = [flat.key() for _ in codes]
    flat.vector(code_keys, key)
    versions = {kind: version(kind, ops) for kind in codes}
    for kind, code_key in zip(codes, code_keys):
        flat.table(((0, 'b', min(kind, 127)), (2, 'i', versions[kind]), (3, 'i', kind)), code_key)
    return versions


def _metadata(flat, name, buffer, key):
    """A metadata vector of one entry: `name` with its data in `buffer`."""
    entry, entry_name = flat.key(), flat.key()
    flat.vector([entry], key)
    flat.table(((0, 'R', entry_name), (1, 'I', buffer)), entry)
    flat.string(name, entry_name)


def _version(kind, ops):
    """Versions as the converter sets them for float32: a dilated depthwise conv needs version 2."""
    dilated = any(op.kind == kind == OPS.DEPTHWISE_CONV_2D and op.attrs['dilation'] > 1 for op in ops)
    return 2 if dilated else 1


def write_tflite(genotype, setting='cifar', channels=36, num_cells=20, num_classes=10, image_size=32,
                 batch_size=1, seed=0, weights=None):
    """The float32 .tflite file (bytes) the converter makes of constant.concrete_function's graph.

    weights: None, the constant graph's seeded weights (N(0, 0.1) drawn in float64: the converter's
    file exactly); 'fast', uniform float32 of standard deviation 0.1 from the same seed, drawn in one
    call in TFLite layout, BN-folded convs scaled by a second draw as the converter's are (other values
    of the same magnitudes, ~2x faster: for timing, where values do not matter); or float32 arrays in
    the walk's order and TF layout (conv k x k x in x out, depthwise k x k x c x 1, BN scale then
    offset, classifier in x classes then bias)."""
    walked = (genotype, setting, channels, num_cells, num_classes, image_size)
    return _write(walked, batch_size, seed, weights)[0]


def timing_tflite(genotype, setting='cifar', channels=36, num_cells=20, num_classes=10, image_size=32,
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
        graph = _TFGraph()
    else:
        given = iter(weights)
        graph = _TFGraph(lambda shape: next(given))
    x = graph.input(batch_size, image_size)
    output = graph.network(x, *walked)
    return _serialize(_convert(graph.nodes, x), x, output, rng), graph.params
