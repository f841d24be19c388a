"""Is the directly written TFLite file the converter's file? graph.tflite_writer against the converter
(graph.constant.genotype_to_tflite) on random and published genotypes, both settings:
identical operator sequences (builtin, version, options, input and output shapes and types, int32
constants), metadata and outputs on one seeded image (same weights), and the CPU time of writing.
With --alternation=N, also N random CIFAR genotypes whose converter file and profiler file
(tflite_writer.timing_tflite) are timed in turn, to compare their difference with the timing's own
repeatability. Writes docs/tflite_writer_equivalence.md and .json.

--format=int8: graph.tflite_int8_writer's timing file against the converter's full-integer file
(constant.genotype_to_tflite_int8): the same structure (see INT8_STRUCTURE), values aside; the written
file must run. Writes docs/tflite_int8_writer_equivalence.md and .json (as it goes, every 10 genotypes).

  python -m benchmarks.tflite_writer_equivalence --random=200
  taskset -c 0 python -m benchmarks.tflite_writer_equivalence --nocompare --alternation=20
  taskset -c 0 python -m benchmarks.tflite_writer_equivalence --format=int8 --random=200
(argparse, not absl flags: the tests import this module's comparison, and flags defined at import would
clash with the tools' in the same test process.)
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from ladnas_tf import genotypes, search_space
from ladnas_tf.graph.setting import Setting
from ladnas_tf.profiling.targets import local
from benchmarks import portable, provenance, write_json


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--random', type=int, default=200, help='Random genotypes per setting (besides the published).')
    parser.add_argument('--seed', type=int, default=0, help='Seed of the random genotypes.')
    parser.add_argument('--write_repeats', type=int, default=20, help='Repeats of the write-time measurement.')
    parser.add_argument('--format', default='float32', choices=FORMATS,
                        help='Numeric format of the files compared: float32, or int8 (full-integer).')
    parser.add_argument('--settings', default='cifar,imagenet', help='Which of the settings to compare.')
    parser.add_argument('--merge', default=None,
                        help='Comma-separated JSON reports of the same format (e.g. one per setting, run side '
                             'by side) to combine into --output instead of comparing.')
    parser.add_argument('--output', default=None,
                        help='Report path without extension (default: docs/tflite_writer_equivalence, '
                             'docs/tflite_int8_writer_equivalence for int8).')
    parser.add_argument('--nocompare', dest='compare', action='store_false',
                        help='Keep the comparison of the existing report (do not compare files again).')
    parser.add_argument('--alternation', type=int, default=0,
                        help='Random CIFAR genotypes whose two files are timed in turn (0: none).')
    parser.add_argument('--rounds', type=int, default=2, help='Timings of each file per genotype in the alternation.')
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = 'docs/tflite_writer_equivalence' if args.format == 'float32' else \
            'docs/tflite_int8_writer_equivalence'
    return args


FORMATS = ('float32', 'int8')
SETTINGS = (Setting('cifar', 36, 20, 32, 1, 10), Setting('imagenet', 48, 14, 224, 1, 1000))
PROTOCOL = dict(warmup=5, runs=20, max_cv=0.05, max_attempts=3)  # the latency table's
IGNORED_METADATA = (b'CONVERSION_METADATA',)  # the converter's run (TF version, options, hash); nothing reads it
STALE_AT_TOP = ('command', 'commit', 'date', 'machine', 'provenance_note')  # replaced by each run that writes


INT8_STRUCTURE = (
    'Same structure: the same operators in the same order with the same builtin, version and options; '
    'the same input and output tensor shapes and types; int32 constants without quantization (shapes, '
    'slices, paddings, axes) by value; per tensor the same quantization layout (number of scales and of '
    'zero points, quantized dimension; per-channel constants symmetric, zero points 0); for the ops that '
    'keep a scale (pools, slices, PAD, SPACE_TO_BATCH_ND, BATCH_TO_SPACE_ND, CONCATENATION), which of '
    'their activation inputs have their output\'s scale and zero point (all: no requantization inside '
    'them); the same metadata (min_runtime_version; CONVERSION_METADATA left out, as for float32) and no '
    'signature defs. Values (scales and zero points of activations, weights, biases) are not compared: '
    'the writer draws them as the converter distributes them (latency depends on their distribution a '
    'little, not on the values).')


def structure(model_bytes):
    """Everything of a file the interpreter acts on, tensor indices, names and quantized values aside
    (for int8 files: INT8_STRUCTURE)."""
    from ai_edge_litert import schema_py_generated as schema

    from ladnas_tf.graph.tflite_int8_writer import SAME_SCALE  # the ops that keep their input's scale
    model = schema.ModelT.InitFromPackedBuf(model_bytes, 0)
    graph = model.subgraphs[0]

    def quantization(t, constant):
        q = t.quantization
        if q is None or q.scale is None:
            return None
        zeros = not np.any(q.zeroPoint) if constant and len(q.scale) > 1 else None  # symmetric per channel
        return len(q.scale), len(q.zeroPoint), int(q.quantizedDimension), zeros

    def params(i):
        q = graph.tensors[i].quantization
        return None if q is None or q.scale is None else (q.scale.tobytes(), q.zeroPoint.tobytes())

    def tensor(i):
        t, data = graph.tensors[i], model.buffers[graph.tensors[i].buffer].data
        constant = data is not None
        layout = quantization(t, constant)
        ints = None if not constant or t.type != schema.TensorType.INT32 or layout else np.asarray(data).tobytes()
        return tuple(int(n) for n in t.shape), int(t.type), ints, layout

    ops = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        options = op.builtinOptions
        out = params(op.outputs[0])
        same = tuple(params(i) == out for i in op.inputs if model.buffers[graph.tensors[i].buffer].data is None) \
            if out and code.builtinCode in SAME_SCALE else ()
        ops.append((int(code.builtinCode), int(code.version), int(op.builtinOptionsType),
                    sorted(vars(options).items()) if options else None,
                    [tensor(i) for i in op.inputs], [tensor(i) for i in op.outputs], same))
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


def compare(genotype, setting, numeric='float32'):
    """(difference ('' if none), max |output difference| / max |output|) of writer and converter; for
    int8 (values differ by design), the relative output is that of the written file being finite:
    0.0 if its logits are all finite, else inf."""
    from ladnas_tf.graph import constant, tflite_int8_writer, tflite_writer
    kwargs = setting.network_kwargs()
    shape = (setting.batch_size, setting.image_size, setting.image_size, 3)
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if numeric == 'int8':
        converted = constant.genotype_to_tflite_int8(genotype, **kwargs)[0]
        written = tflite_int8_writer.timing_tflite_int8(genotype, **kwargs)[0]
        difference = first_difference(structure(converted), structure(written))
        return difference, 0.0 if np.isfinite(run(written, image)).all() else float('inf')
    converted = constant.genotype_to_tflite(genotype, **kwargs)[0]
    written = tflite_writer.write_tflite(genotype, **kwargs)
    difference = first_difference(structure(converted), structure(written))
    a, b = run(converted, image), run(written, image)
    return difference, float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))


def write_seconds(write, genotype, setting, repeats):
    """Median CPU seconds (time.process_time) of writing one file with `write`."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        write(genotype, **setting.network_kwargs())
        times.append(time.process_time() - start)
    return float(np.median(times))


def makers(numeric):
    """{'converter': ..., 'writer': ...}: genotype, **setting -> (file, params, MACs) of the format."""
    from ladnas_tf.graph import constant, tflite_int8_writer, tflite_writer
    if numeric == 'int8':
        return {'converter': constant.genotype_to_tflite_int8, 'writer': tflite_int8_writer.timing_tflite_int8}
    return {'converter': constant.genotype_to_tflite, 'writer': tflite_writer.timing_tflite}


def alternation(count, rounds, seed, numeric='float32'):
    """Per random CIFAR genotype, the converter's file and the profiler's written one, each timed `rounds`
    times with the table's protocol, in turn (C W W C ...: drift falls on both alike); the medians."""
    from ladnas_tf.profiling import measure
    setting = SETTINGS[0]
    target = local.CpuTFLiteInt8(1) if numeric == 'int8' else local.CpuTFLite(1)
    rng, rows = np.random.default_rng(seed + 1), []
    for _ in range(count):
        genotype = search_space.sample_genotype(rng)
        runners = {k: target.runner(make(genotype, **setting.network_kwargs())[0])
                   for k, make in makers(numeric).items()}
        times = {k: [] for k in runners}
        for r in range(rounds):
            for k in (list(runners) if r % 2 == 0 else list(runners)[::-1]):
                times[k].append(measure.measure(runners[k], **PROTOCOL)[0].latency_ms)
        rows.append(dict(genotype=str(genotype), **times))
    return summarize_alternation(rows, rounds)


def summarize_alternation(rows, rounds):
    """own: |second - first| / first of the same file; cross: |writer - converter| / converter of the
    timings next to each other; bias: mean writer / mean converter - 1 per genotype."""
    own = [abs(r[k][i + 1] - r[k][i]) / r[k][i] for r in rows for k in ('converter', 'writer')
           for i in range(rounds - 1)]
    cross = [abs(r['writer'][i] - r['converter'][i]) / r['converter'][i] for r in rows for i in range(rounds)]
    bias = [np.mean(r['writer']) / np.mean(r['converter']) - 1 for r in rows]
    return dict(genotypes=len(rows), rounds=rounds, protocol=PROTOCOL,
                own_median_rel_diff=float(np.median(own)), cross_median_rel_diff=float(np.median(cross)),
                own_p90_rel_diff=float(np.quantile(own, 0.9)), cross_p90_rel_diff=float(np.quantile(cross, 0.9)),
                bias_mean=float(np.mean(bias)), bias_sem=float(np.std(bias, ddof=1) / np.sqrt(len(bias))),
                within_repeatability=bool(np.median(cross) <= np.median(own)), rows=rows)


def sample(count, seed):
    rng = np.random.default_rng(seed)
    named = list(genotypes.NAMED.items())
    return named + [(f'random_{i}', search_space.sample_genotype(rng)) for i in range(count)]


def merge(reports):
    """One report of several runs' reports: a setting compared by one run is taken as it is; one compared
    by runs of different seeds is added up (the published genotypes, in every run, counted once; CPU
    minutes added; write times the first run's; each run kept under `runs`)."""
    merged = {**reports[0], 'random_seeds': sorted({s for r in reports for s in r['random_seeds']}), 'settings': {}}
    per_setting = []
    for key in dict.fromkeys(k for r in reports for k in r['settings']):
        parts = [r for r in reports if key in r['settings']]
        seeds = [s for r in parts for s in r['random_seeds']]
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f'error: the reports of {key} share a seed ({seeds}): their random genotypes are the same')
        per_setting.append(sum(r['random_per_setting'] for r in parts))
        merged['settings'][key] = _added([(r['random_seeds'][0], r['settings'][key]) for r in parts])
    merged['random_per_setting'] = max(per_setting)
    return merged


def _added(parts):
    """One setting's result from runs of different seeds [(seed, result)]."""
    if len(parts) == 1:
        return parts[0][1]
    results = [p for _, p in parts]
    named_identical = len(genotypes.NAMED) - sum(d['name'] in genotypes.NAMED for d in results[0]['differing'])
    return {**results[0],
            'architectures': sum(p['architectures'] for p in results) - (len(parts) - 1) * len(genotypes.NAMED),
            'identical': sum(p['identical'] for p in results) - (len(parts) - 1) * named_identical,
            'max_relative_output': max(p['max_relative_output'] for p in results),
            'cpu_minutes': sum(p['cpu_minutes'] for p in results),
            'differing': list({(d['name'], d['genotype']): d for p in results for d in p['differing']}.values())[:20],
            'runs': {name: run for seed, p in parts for name, run in p.get('runs', {f'seed{seed}': p}).items()},
            # the write times of the first run that measured them (a run cut short has none)
            **{k: next(p[k] for p in results if k in p) for k in ('write_ms', 'timing_write_ms', 'convert_ms')
               if any(k in p for p in results)}}


def compare_all(args, save=lambda results: None, started_by=None):
    """The comparison of every setting; `save(results)` is called as it goes (every 10 genotypes).
    started_by: the provenance recorded with each setting."""
    write = makers(args.format)['writer']
    results = {'format': args.format, 'random_per_setting': args.random, 'random_seeds': [args.seed],
               'settings': {}}
    for setting in SETTINGS:
        if setting.setting not in args.settings.split(','):
            continue
        rows, started = [], time.process_time()
        for name, genotype in sample(args.random, args.seed):
            difference, relative = compare(genotype, setting, args.format)
            rows.append(dict(name=name, genotype=str(genotype), difference=difference, relative_output=relative))
            summary = results['settings'][setting.key] = dict(
                architectures=len(rows), identical=sum(not r['difference'] for r in rows),
                max_relative_output=max(r['relative_output'] for r in rows),
                cpu_minutes=(time.process_time() - started) / 60,
                differing=[r for r in rows if r['difference']][:20], provenance=started_by)
            if len(rows) % 10 == 0:
                save(results)
        if args.format == 'int8':
            summary['write_ms'] = 1000 * write_seconds(write, genotypes.DARTS_V2, setting, args.write_repeats)
            summary['convert_ms'] = 1000 * write_seconds(makers('int8')['converter'], genotypes.DARTS_V2, setting,
                                                         max(1, args.write_repeats // 5))
        else:
            from ladnas_tf.graph import tflite_writer
            summary['write_ms'] = 1000 * write_seconds(tflite_writer.write_tflite, genotypes.DARTS_V2, setting,
                                                       args.write_repeats)
            summary['timing_write_ms'] = 1000 * write_seconds(write, genotypes.DARTS_V2, setting,
                                                              args.write_repeats)
        save(results)
    return results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)

    def save(results):
        """With this run's command, commit, date and machine at the top (tests/test_provenance.py); an
        earlier run's, read back with --nocompare, stay only where it nested them."""
        write_json(args.output + '.json', {k: v for k, v in results.items() if k not in STALE_AT_TOP}, indent=1)
    if args.merge:
        reports = []
        for path in args.merge.split(','):
            with open(path, encoding='utf-8') as f:
                reports.append(json.load(f))
        results = merge(reports)
        results['provenance'] = {**provenance(), 'merged': portable(args.merge).split(',')}
    elif args.compare:
        results = compare_all(args, save, provenance())
        results['provenance'] = provenance()
    else:
        with open(args.output + '.json', encoding='utf-8') as f:
            results = json.load(f)
    if args.alternation:
        results['alternation'] = alternation(args.alternation, args.rounds, args.seed, args.format)
        results['alternation']['cores'] = sorted(os.sched_getaffinity(0))
        results['alternation']['provenance'] = provenance()
    save(results)
    with open(args.output + '.md', 'w', encoding='utf-8') as f:
        f.write(report(results))
    print(report(results))


def report(results):
    if results.get('format', 'float32') == 'int8':
        return int8_report(results)
    lines = ['# The TFLite writer against the converter', '',
             f'`python -m benchmarks.tflite_writer_equivalence --random={results["random_per_setting"]}`: '
             f'the {len(genotypes.NAMED)} published genotypes and {results["random_per_setting"]} random ones '
             '(seed 0) per setting, each converted by the TF converter (graph.constant) and written by '
             'graph.tflite_writer with the same seeded weights.', '',
             '| setting | architectures | identical files | max relative output difference | '
             'write, seeded weights (CPU ms) | write, profiler file (CPU ms) | comparison CPU min |',
             '|---|---|---|---|---|---|---|']
    for key, r in results['settings'].items():
        lines.append(f"| {key} | {r['architectures']} | {r['identical']} | {r['max_relative_output']:.2e} | "
                     f"{r['write_ms']:.1f} | {r['timing_write_ms']:.1f} | {r['cpu_minutes']:.1f} |")
    lines += ['', 'Identical: same operators in the same order with the same builtin, version and options, the '
              'same input and output tensor shapes and types (int32 constants by value), the same metadata '
              '(min_runtime_version; CONVERSION_METADATA, which describes the converter run and is read by '
              'nothing at run time, is left out by the writer) and no signature defs in either. Output '
              'difference: max |converter - writer| / max |converter| on one seeded standard-normal image, '
              'both run by ai_edge_litert.interpreter (XNNPACK, 1 thread). Write: median CPU time '
              '(time.process_time) of DARTS_V2, with the converter\'s seeded weights (write_tflite) and as '
              'the profiler writes it (timing_tflite: weights drawn at once, values aside the same file).',
              '']
    lines += _differing(results)
    if 'alternation' in results:
        lines += alternation_report(results['alternation'])
    return '\n'.join(lines) + '\n'


def _differing(results):
    return [f"- {key} {row['name']}: {row['difference'][:300]}" for key, r in results['settings'].items()
            for row in r['differing']]


def int8_report(results):
    p = results.get('provenance', {})
    lines = ['# The int8 TFLite writer against the converter', '',
             f"`{p.get('command', 'python -m benchmarks.tflite_writer_equivalence --format=int8')}` "
             f"(commit {p.get('commit')}, {p.get('date')}, {p.get('machine', {}).get('device')}): "
             f'the {len(genotypes.NAMED)} published genotypes and random ones '
             f"(seeds {', '.join(map(str, results['random_seeds']))}; counts per setting below), each converted "
             'by the TF converter with '
             'full-integer post-training quantization (graph.constant.genotype_to_tflite_int8: int8 weights '
             'and activations, float32 input and output, calibrated on 4 seeded random images) and written by '
             'graph.tflite_int8_writer.timing_tflite_int8 (the profiler\'s int8 file).', '',
             '| setting | architectures | same structure | written file runs (finite logits) | '
             'write (CPU ms) | convert (CPU ms) | comparison CPU min |', '|---|---|---|---|---|---|---|']
    for key, r in results['settings'].items():
        runs = 'all' if r['max_relative_output'] == 0 else 'NOT all'
        lines.append(f"| {key} | {r['architectures']} ({r['architectures'] - len(genotypes.NAMED)} random) | "
                     f"{r['identical']} | {runs} | "
                     f"{r.get('write_ms', float('nan')):.1f} | {r.get('convert_ms', float('nan')):.0f} | "
                     f"{r['cpu_minutes']:.1f} |")
    lines += ['', INT8_STRUCTURE, '',
              'Write / convert: median CPU time (time.process_time) of DARTS_V2\'s int8 file, written (20 '
              'times) and converted with calibration (4 times), in the process that ran the comparison.', '']
    lines += _differing(results)
    if 'alternation' in results:
        lines += alternation_report(results['alternation'])
    return '\n'.join(lines) + '\n'


def alternation_report(a):
    verdict = 'within' if a['within_repeatability'] else 'NOT within'
    return ['', '## Timed in alternation', '',
            f"`--nocompare --alternation={a['genotypes']} --rounds={a['rounds']}` on cores {a['cores']}: "
            f"{a['genotypes']} random CIFAR C=36 20-cell genotypes, the converter's file and the profiler's "
            f"written file each timed {a['rounds']} times with the table's protocol, in turn, which goes first "
            "alternating (C W W C ...).", '',
            '| | median | p90 |', '|---|---|---|',
            f"| same file timed again: \\|second - first\\| / first | {a['own_median_rel_diff']:.2%} | "
            f"{a['own_p90_rel_diff']:.2%} |",
            f"| writer against converter, timed next to each other | {a['cross_median_rel_diff']:.2%} | "
            f"{a['cross_p90_rel_diff']:.2%} |", '',
            f"Mean writer / converter - 1 per genotype: {a['bias_mean']:+.2%} +- {a['bias_sem']:.2%} (s.e.m.). "
            f"The two files' difference is {verdict} the measurement's own repeatability."]


if __name__ == '__main__':
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    main()
