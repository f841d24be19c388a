"""Is the directly written TFLite file the converter's file? graph.tflite_writer against the converter
(graph.constant.genotype_to_tflite) on random and published genotypes, both settings:
identical operator sequences (builtin, version, options, input and output shapes and types, int32
constants), metadata and outputs on one seeded image (same weights), and the CPU time of writing.
Writes docs/tflite_writer_equivalence.md and .json.

  python -m benchmarks.tflite_writer_equivalence --random=200
"""
import json
import os
import time

import numpy as np
from absl import app, flags

from ladnas_tf import genotypes, search_space
from ladnas_tf.latency import targets

FLAGS = flags.FLAGS
flags.DEFINE_integer('random', 200, 'Random genotypes per setting (besides the published ones).')
flags.DEFINE_integer('seed', 0, 'Seed of the random genotypes.')
flags.DEFINE_integer('write_repeats', 20, 'Repeats of the write-time measurement.')
flags.DEFINE_string('output', 'docs/tflite_writer_equivalence', 'Report path without extension.')

SETTINGS = (targets.Setting('cifar', 36, 20, 32, 1, 10), targets.Setting('imagenet', 48, 14, 224, 1, 1000))
IGNORED_METADATA = (b'CONVERSION_METADATA',)  # the converter's run (TF version, options, hash); nothing reads it


def structure(model_bytes):
    """Everything of a file the interpreter acts on, tensor indices and names aside."""
    from ai_edge_litert import schema_py_generated as schema
    model = schema.ModelT.InitFromPackedBuf(model_bytes, 0)
    graph = model.subgraphs[0]

    def tensor(i):
        t, data = graph.tensors[i], model.buffers[graph.tensors[i].buffer].data
        ints = None if data is None or t.type != schema.TensorType.INT32 else np.asarray(data).tobytes()
        return tuple(int(n) for n in t.shape), int(t.type), ints, getattr(t.quantization, 'scale', None)

    ops = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        options = op.builtinOptions
        ops.append((int(code.builtinCode), int(code.version), int(op.builtinOptionsType),
                    sorted(vars(options).items()) if options else None,
                    [tensor(i) for i in op.inputs], [tensor(i) for i in op.outputs]))
    metadata = sorted((m.name, bytes(model.buffers[m.buffer].data)) for m in model.metadata or []
                      if m.name not in IGNORED_METADATA)
    return dict(version=model.version, ops=ops, metadata=metadata, signatures=len(model.signatureDefs or []),
                inputs=[tensor(i) for i in graph.inputs], outputs=[tensor(i) for i in graph.outputs])


def first_difference(a, b):
    """'' when structures agree, else a one-line account of the first difference."""
    for key in a:
        if key == 'ops':
            continue
        if a[key] != b[key]:
            return f'{key}: converter {a[key]!r}, writer {b[key]!r}'
    for i, (x, y) in enumerate(zip(a['ops'], b['ops'])):
        if x != y:
            return f'operator {i}: converter {x!r}, writer {y!r}'
    if len(a['ops']) != len(b['ops']):
        return f"{len(a['ops'])} operators from the converter, {len(b['ops'])} from the writer"
    return ''


def run(model_bytes, image):
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=model_bytes, num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]['index'], image)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]['index'])


def compare(genotype, setting):
    """(difference ('' if none), max |output difference| / max |output|) of writer and converter."""
    from ladnas_tf.graph import constant, tflite_writer
    kwargs = setting.network_kwargs()
    converted = constant.genotype_to_tflite(genotype, **kwargs)[0]
    written = tflite_writer.write_tflite(genotype, **kwargs)
    difference = first_difference(structure(converted), structure(written))
    shape = (setting.batch_size, setting.image_size, setting.image_size, 3)
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    a, b = run(converted, image), run(written, image)
    return difference, float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))


def write_seconds(genotype, setting, repeats):
    """Median CPU seconds (time.process_time) of writing one file."""
    from ladnas_tf.graph import tflite_writer
    times = []
    for _ in range(repeats):
        start = time.process_time()
        tflite_writer.write_tflite(genotype, **setting.network_kwargs())
        times.append(time.process_time() - start)
    return float(np.median(times))


def sample(count, seed):
    rng = np.random.default_rng(seed)
    named = list(genotypes.NAMED.items())
    return named + [(f'random_{i}', search_space.sample_genotype(rng)) for i in range(count)]


def main(argv):
    del argv
    results = {'random_per_setting': FLAGS.random, 'settings': {}}
    for setting in SETTINGS:
        rows, started = [], time.process_time()
        for name, genotype in sample(FLAGS.random, FLAGS.seed):
            difference, relative = compare(genotype, setting)
            rows.append(dict(name=name, genotype=str(genotype), difference=difference, relative_output=relative))
        results['settings'][setting.key] = dict(
            architectures=len(rows), identical=sum(not r['difference'] for r in rows),
            max_relative_output=max(r['relative_output'] for r in rows),
            write_ms=1000 * write_seconds(genotypes.DARTS_V2, setting, FLAGS.write_repeats),
            cpu_minutes=(time.process_time() - started) / 60,
            differing=[r for r in rows if r['difference']][:20])
    with open(FLAGS.output + '.json', 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=1)
    with open(FLAGS.output + '.md', 'w', encoding='utf-8') as f:
        f.write(report(results))
    print(report(results))


def report(results):
    lines = ['# The TFLite writer against the converter', '',
             f'`python -m benchmarks.tflite_writer_equivalence --random={results["random_per_setting"]}`: '
             f'the {len(genotypes.NAMED)} published genotypes and {results["random_per_setting"]} random ones '
             '(seed 0) per setting, each converted by the TF converter (graph.constant) and written by '
             'graph.tflite_writer with the same seeded weights.', '',
             '| setting | architectures | identical files | max relative output difference | '
             'write (CPU ms, DARTS_V2, median) | comparison CPU min |', '|---|---|---|---|---|---|']
    for key, r in results['settings'].items():
        lines.append(f"| {key} | {r['architectures']} | {r['identical']} | {r['max_relative_output']:.2e} | "
                     f"{r['write_ms']:.1f} | {r['cpu_minutes']:.1f} |")
    lines += ['', 'Identical: same operators in the same order with the same builtin, version and options, the '
              'same input and output tensor shapes and types (int32 constants by value), the same metadata '
              '(min_runtime_version; CONVERSION_METADATA, which describes the converter run and is read by '
              'nothing at run time, is left out by the writer) and no signature defs in either. Output '
              'difference: max |converter - writer| / max |converter| on one seeded standard-normal image, '
              'both run by ai_edge_litert.interpreter (XNNPACK, 1 thread).', '']
    for key, r in results['settings'].items():
        for row in r['differing']:
            lines.append(f"- {key} {row['name']}: {row['difference'][:300]}")
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    app.run(main)
