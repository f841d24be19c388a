"""TFLite export of evaluation networks (float32 or post-training int8, converted by
graph/convert.py), the parity check that the exported file computes what the Keras model does, and
the written file with its summary.
"""
import collections
import importlib.metadata
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from ladnas_tf import run_dir, search_space
from ladnas_tf.bad_input import BadInput
from ladnas_tf.graph import convert

FLOAT_PARITY_TOLERANCE = 1e-4  # largest |TFLite - Keras| logit over the largest |Keras| logit
_BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith('_')}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith('_')}


class ExportError(BadInput):
    """An export that must not be written: an existing output, or a float model that lost parity."""


def run_tflite(tflite_bytes, images, threads=1):
    """Logits of a batch-1 TFLite model on each image in turn (quantized input/output handled)."""
    interpreter = Interpreter(model_content=tflite_bytes, num_threads=threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    logits = []
    for image in np.asarray(images, np.float32):
        x = image[None]
        if inp['dtype'] != np.float32:
            scale, zero = inp['quantization']
            x = np.clip(np.round(x / scale + zero), *_limits(inp['dtype'])).astype(inp['dtype'])
        interpreter.set_tensor(inp['index'], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out['index'])[0]
        if out['dtype'] != np.float32:
            scale, zero = out['quantization']
            y = (y.astype(np.float32) - zero) * scale
        logits.append(y)
    return np.stack(logits)


def _limits(dtype):
    info = np.iinfo(dtype)
    return info.min, info.max


def _subgraphs(tflite_bytes):
    model = schema.Model.GetRootAs(tflite_bytes, 0)
    return model, [model.Subgraphs(s) for s in range(model.SubgraphsLength())]


def tflite_op_counts(tflite_bytes):
    """Counter of the builtin op names in the flatbuffer (as converted, before any delegate)."""
    model, subgraphs = _subgraphs(tflite_bytes)
    counts = collections.Counter()
    for graph in subgraphs:
        for k in range(graph.OperatorsLength()):
            code = model.OperatorCodes(graph.Operators(k).OpcodeIndex())
            # Old files keep small codes in the deprecated byte; the larger of the two is the real one.
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = _BUILTIN_NAMES.get(builtin, f'BUILTIN_{builtin}')
            counts[code.CustomCode().decode() if name == 'CUSTOM' else name] += 1
    return counts


def tflite_tensor_types(tflite_bytes):
    """Counter of tensor element types (e.g. FLOAT32, INT8, INT32) in the flatbuffer."""
    _, subgraphs = _subgraphs(tflite_bytes)
    return collections.Counter(_TYPE_NAMES[g.Tensors(t).Type()]
                               for g in subgraphs for t in range(g.TensorsLength()))


def parity(model, tflite_bytes, images, threads=1):
    """How far the TFLite logits are from the Keras model's (training=False) on the same images."""
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    got = run_tflite(tflite_bytes, images, threads)
    scale = float(np.abs(expected).max())
    max_abs = float(np.abs(got - expected).max())
    return {'images': len(images), 'max_abs_diff': max_abs, 'logit_scale': scale,
            'relative_diff': max_abs / scale if scale else max_abs,
            'top1_agreement': float(np.mean(got.argmax(-1) == expected.argmax(-1)))}


def versions():
    return {'tensorflow': tf.__version__, 'keras': keras.__version__,
            'ai_edge_litert': importlib.metadata.version('ai-edge-litert')}


def summary_path(output):
    """Where the summary JSON of `output` goes: beside it, d.tflite -> d.json."""
    return os.path.splitext(output)[0] + '.json'


def check_outputs(output, overwrite=False):
    """Raises ExportError unless `output` (a .tflite path) and its summary may be written."""
    if not output.endswith('.tflite'):
        raise ExportError(f'output {output!r} must end in .tflite')
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise ExportError(f'output folder {folder} does not exist')
    for path in (output, summary_path(output)):
        if os.path.exists(path) and not overwrite:
            raise ExportError(f'{path} exists (pass --overwrite to replace it)')


def _write_all(files, overwrite):
    """Writes {path: bytes}: every file to a temporary beside it first, moved into place only when all are
    complete, so a failure leaves what was there before (run_dir.atomic_paths)."""
    with run_dir.atomic_paths(files) as temps:
        for path, data in files.items():
            with open(temps[path], 'wb') as f:
                f.write(data)
        for path in files:  # checked again: the conversion took seconds, another process may have written
            if os.path.exists(path) and not overwrite:
                raise ExportError(f'{path} exists (pass --overwrite to replace it)')


def export(model, output, int8=False, representative=None, parity_images=8, threads=1,
           overwrite=False):
    """Converts a built evaluation network, checks it against Keras, and writes `output` and its
    summary JSON (returned as a dict). A float32 export outside FLOAT_PARITY_TOLERANCE is refused."""
    check_outputs(output, overwrite)
    image_size = model.image_size
    start, cpu_start = time.perf_counter(), time.process_time()
    tflite_bytes = convert.keras_to_tflite(model, image_size, int8, representative)
    # Wall and CPU time: on a shared machine the CPU time is the one to compare across runs.
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    check = parity(model, tflite_bytes, convert.random_images(parity_images, image_size), threads)
    if not int8 and check['relative_diff'] > FLOAT_PARITY_TOLERANCE:
        raise ExportError(f"float32 TFLite logits differ from Keras by {check['relative_diff']:.2e} "
                          f'of the logit scale (tolerance {FLOAT_PARITY_TOLERANCE:.0e})')
    summary = {
        'genotype': str(model.genotype), 'genotype_id': search_space.genotype_id(model.genotype),
        'setting': model.setting,
        'channels': model.channels, 'cells': model.num_cells, 'num_classes': model.num_classes,
        'image_size': image_size, 'int8': int8, 'params': model.count_eval_params(),
        'macs': model.count_macs(), 'file_bytes': len(tflite_bytes), 'parity': check,
        'tflite_ops': dict(sorted(tflite_op_counts(tflite_bytes).items())),
        'conversion_seconds': round(seconds, 3), 'conversion_cpu_seconds': round(cpu_seconds, 3),
        'versions': versions()}
    _write_all({output: tflite_bytes,
                summary_path(output): (json.dumps(summary, indent=2) + '\n').encode()}, overwrite)
    return summary
