"""The profiler's int8 TFLite file written directly from the genotype, without TensorFlow.

graph.constant.genotype_to_tflite_int8 converts the constant graph with full-integer post-training
quantization (int8 weights and activations, float32 input and output). Its operators are the float32
file's (tflite_writer: the same walk, the same conversion steps, the same order) between a QUANTIZE of
the input and a DEQUANTIZE of the logits, at int8 versions; this module writes that file with
tflite_writer's serializer:

- weights int8, per output channel (CONV_2D and FULLY_CONNECTED on dimension 0, DEPTHWISE_CONV_2D on
  dimension 3), zero points 0; biases int32 per channel, scale input scale x weight scale (the kernels
  check that); a batch norm left after a concatenation keeps its MUL and ADD with int8 per-tensor
  constants; shape, slice and padding constants stay int32 without quantization;
- activations int8 per tensor. The ops that keep the scale (pools, slices, paddings, SPACE_TO_BATCH_ND,
  BATCH_TO_SPACE_ND) have their input's parameters, a concatenation's inputs and output one set (the
  converter gives a concatenation's inputs its output's scale rather than requantize them), and a
  batch-norm ADD feeding a pool its MUL's; ReLU outputs start at zero (zero point -128).

The values are plausible, not calibrated: an int8 file's latency does not depend on them (weights are
uniform int8, scales fixed per kind of tensor within the ranges XNNPACK accepts). Only the profiler's
timing file is written ('fast' weights); benchmarks/tflite_writer_equivalence.py --format=int8 and
tests/test_tflite_int8_writer.py check its structure against the converter's.
"""
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from ladnas_tf.graph import tflite_writer as fw
from ladnas_tf.graph.macs import network_macs

OPS = fw.OPS
WriterError = fw.WriterError

# Operator versions of the converter's int8 file (op_version.cc: int8 kernels), and the runtime that
# first has each (runtime_version.cc); the file's min_runtime_version is the newest of its operators'.
VERSIONS = {OPS.QUANTIZE: 1, OPS.CONV_2D: 3, OPS.DEPTHWISE_CONV_2D: 3, OPS.FULLY_CONNECTED: 4}
DEFAULT_VERSION = 2  # int8 ADD, MUL, RELU, pools, CONCATENATION, MEAN, PAD, slices, DEQUANTIZE, ...
RUNTIMES = {(OPS.RELU, 2): '2.1.0'}
DEFAULT_RUNTIME = '1.14.0'
# Ops whose output keeps their (first) input's quantization.
SAME_SCALE = (OPS.MAX_POOL_2D, OPS.AVERAGE_POOL_2D, OPS.STRIDED_SLICE, OPS.PAD, OPS.SPACE_TO_BATCH_ND,
              OPS.BATCH_TO_SPACE_ND, OPS.CONCATENATION)
POOLS = (OPS.MAX_POOL_2D, OPS.AVERAGE_POOL_2D)
WEIGHTED = {OPS.CONV_2D: 0, OPS.FULLY_CONNECTED: 0, OPS.DEPTHWISE_CONV_2D: 3}  # quantized dimension

# Activation scales (zero point 0; -128 after a ReLU) and per-channel weight scales by producer, of the
# order the converter's calibration gives with the constant graph's N(0, 0.1) weights.
INPUT_SCALE = 4 / 127  # standard-normal images
OUTPUT_SCALE = {OPS.CONV_2D: 2e-3, OPS.DEPTHWISE_CONV_2D: 1e-3, OPS.ADD: 3e-3, OPS.MUL: 2e-3,
                OPS.RELU: 1e-3, OPS.FULLY_CONNECTED: 4e-3, OPS.CONCATENATION: 3e-3}
RELU_SCALE = 1e-3
WEIGHT_SCALE = {OPS.CONV_2D: 2e-4, OPS.DEPTHWISE_CONV_2D: 1.5e-3, OPS.FULLY_CONNECTED: 2e-3}
CONSTANT_SCALE, CONSTANT_ZERO_POINT = 1.5e-3, -20  # a batch norm's scale or offset after a concatenation
MEAN_RATIO = 0.999  # the converter's MEAN output scale is close to, not equal to, its input's


def _version(kind, ops):
    return VERSIONS.get(kind, DEFAULT_VERSION)


def _min_runtime_version(versions):
    newest = max((RUNTIMES.get(item, DEFAULT_RUNTIME) for item in versions.items()),
                 key=lambda v: tuple(int(n) for n in v.split('.')))
    return newest.encode()


def _boundaries(ops, root, output):
    """The converted operators between QUANTIZE (of the input) and DEQUANTIZE (of the logits)."""
    quantize = fw._Node('tfl.quantize', OPS.QUANTIZE, [root], root.shape)
    for op in ops:
        op.inputs = [quantize if i.resolved() is root else i for i in op.inputs]
    logits = output.resolved()
    return [quantize, *ops, fw._Node('Identity', OPS.DEQUANTIZE, [logits], logits.shape)]


def _activations(ops):
    """{id(node): (scale, zero point)} of every int8 activation, equal where the converter's are equal:
    tensors joined by a scale-keeping op (or a batch-norm ADD feeding a pool) form one group, whose
    parameters are its concatenation's if it has one, else those of its first producer."""
    parent = {}

    def find(key):
        while parent.get(key, key) != key:
            key = parent[key]
        return key

    consumers = {}
    for op in ops:
        for i in op.inputs:
            consumers.setdefault(id(i.resolved()), []).append(op)
    for op in ops:
        if op.kind in SAME_SCALE:
            for i in op.inputs:
                parent[find(id(i.resolved()))] = find(id(op))
        elif op.kind == OPS.ADD and op.consts and any(c.kind in POOLS for c in consumers.get(id(op), ())):
            parent[find(id(op))] = find(id(op.inputs[0].resolved()))
    groups = {}
    for op in ops[:-1]:  # the DEQUANTIZE's output is float
        group = find(id(op))
        if op.kind == OPS.CONCATENATION:
            groups[group] = (OUTPUT_SCALE[OPS.CONCATENATION], 0)
        elif op.kind == OPS.QUANTIZE:
            groups[group] = (INPUT_SCALE, 0)
        elif op.kind in SAME_SCALE or group in groups:
            continue
        elif op.kind == OPS.RELU or op.act:
            groups[group] = (RELU_SCALE, -128)
        else:
            groups[group] = (OUTPUT_SCALE.get(op.kind, OUTPUT_SCALE[OPS.ADD]), 0)
    # Calibration gives every group its own range: scales made distinct, so that only the tensors the
    # converter gives one set of parameters have equal ones.
    groups = {g: (scale * (1 + 1e-3 * n), zero) for n, (g, (scale, zero)) in enumerate(groups.items())}
    params = {id(op): groups[find(id(op))] for op in ops[:-1] if op.kind != OPS.MEAN}
    for op in ops:
        if op.kind == OPS.MEAN:
            scale, zero = params[id(op.inputs[0].resolved())]
            params[id(op)] = (scale * MEAN_RATIO, zero)
    return params


def _per_tensor(scale, zero=0):
    return np.asarray([scale], np.float32), np.asarray([zero], np.int64), 0


def _weights(shapes, rng):
    """int8 weights (as uint8 bytes) of these (shape, quantized dimension or None: per tensor), one after
    the other, distributed as the converter
    quantizes N(0, 0.1) weights per channel (or per tensor): normal, scaled so that a channel's largest
    magnitude, about sqrt(2 ln 2n) standard deviations among its n values, is 127. Latency depends on the
    values a little (on this x86 CPU uniform int8 weights and small biases timed ~5% slower than the
    converter's file), so they follow the converter's distribution."""
    sizes = np.asarray([int(np.prod(s)) for s, _ in shapes], np.int64)
    fan = np.asarray([size / (s[d] if d is not None else 1) for (s, d), size in zip(shapes, sizes)])
    spread = (127 / np.sqrt(2 * np.log(2 * np.maximum(fan, 2)))).astype(np.float32)
    values = rng.standard_normal(int(sizes.sum()), np.float32)
    values *= np.repeat(spread, sizes)
    np.clip(values, -127, 127, out=values)
    return np.rint(values).astype(np.int8).view(np.uint8)


def _number(ops, root, rng):
    """(_Model, tensor index by node id) as tflite_writer._number, with int8 types and quantization:
    the input, then constants, then intermediate tensors. Weights are drawn in one call, biases in one."""
    model = fw._Model()
    index = {id(root): model.tensor(root.shape)}
    activations = _activations(ops)
    weights, biases = [], []
    for op in ops:
        if op.kind in WEIGHTED:
            weights.append((op.consts[0].shape, WEIGHTED[op.kind]))
            biases.append(op.consts[1].shape if isinstance(op.consts[1], fw._Fresh) else None)
        elif op.kind in (OPS.MUL, OPS.ADD) and op.consts:
            weights.append((op.consts[0].shape, None))
    weight_bytes = _weights(weights, rng)
    bias_values = rng.standard_normal(sum(s[0] for s in biases if s is not None), np.float32)
    weight_at = bias_at = 0
    for op in ops:
        if op.kind in WEIGHTED:
            weight, bias = op.consts
            size = int(np.prod(weight.shape))
            dimension, channels = WEIGHTED[op.kind], weight.shape[WEIGHTED[op.kind]]
            scales = np.full(channels, WEIGHT_SCALE[op.kind], np.float32)
            zeros = np.zeros(channels, np.int64)
            w = model.tensor(weight.shape, np.int8, weight_bytes[weight_at:weight_at + size],
                             (scales, zeros, dimension))
            weight_at += size
            input_scale = activations[id(op.inputs[0].resolved())][0]
            bias_scales = (np.float64(np.float32(input_scale)) * scales.astype(np.float64)).astype(np.float32)
            if isinstance(bias, fw._Fresh):  # a folded batch norm's N(0, 0.1) offset, in bias units
                data = np.rint(bias_values[bias_at:bias_at + channels] * (0.1 / bias_scales)).astype(np.int32)
                bias_at += channels
            else:  # a conv without a folded batch norm: a zero bias
                data = np.zeros(channels, np.int32)
            b = model.tensor((channels,), np.int32, data.view(np.uint8), (bias_scales, zeros, 0))
            op.consts = [w, b]
        elif op.kind in (OPS.MUL, OPS.ADD) and op.consts:  # a batch norm after a concatenation
            size = op.consts[0].shape[0]
            op.consts = [model.tensor((size,), np.int8, weight_bytes[weight_at:weight_at + size],
                                      _per_tensor(CONSTANT_SCALE, CONSTANT_ZERO_POINT))]
            weight_at += size
        else:
            for c in op.consts:
                if isinstance(c, fw._Fresh) or c.dtype != np.int32:
                    raise WriterError(f'the int8 writer has no quantization for a constant of {op.name}')
            op.consts = [model.constant(c) for c in op.consts]
    for op in ops[:-1]:
        index[id(op)] = model.tensor(op.shape, np.int8, None, _per_tensor(*activations[id(op)]))
    index[id(ops[-1])] = model.tensor(ops[-1].shape)
    return model, index


def timing_tflite_int8(genotype, setting='cifar', channels=36, num_cells=20, num_classes=10, image_size=32,
                       batch_size=1, seed=0):
    """(file, params, MACs per image) as constant.genotype_to_tflite_int8 gives them, for timing: the
    converter's int8 file in structure (operators, options, versions, tensor shapes, types and
    quantization layout), with uncalibrated values, which latency does not depend on."""
    walked = (genotype, setting, channels, num_cells, num_classes, image_size)
    if setting not in ('cifar', 'imagenet'):
        raise WriterError(f"the TFLite writer knows settings 'cifar' and 'imagenet', not {setting!r}")
    graph = fw._TFGraph()
    x = graph.input(batch_size, image_size)
    output = graph.network(x, *walked)
    ops = _boundaries(fw._convert(graph.nodes, x), x, output)
    rng = np.random.default_rng(seed)
    model, index = _number(ops, x, rng)
    data = fw._lay_out(ops, x, ops[-1], model, index, rng, _version, _min_runtime_version, quantized=True)
    return data, graph.params, network_macs(*walked)


__all__ = ['timing_tflite_int8', 'WriterError', 'schema']
