"""Is the directly written TFLite file the converter's file? graph.tflite_writer against the converter
(graph.constant.genotype_to_tflite) on random and published genotypes, both settings:
identical operator sequences (builtin, version, options, input and output shapes and types, int32
constants), metadata and outputs on one seeded image (same weights), and the CPU time of writing.
With --alternation=N, also N random CIFAR genotypes whose converter file and profiler file
(tflite_writer.timing_tflite) are timed in turn, to compare their difference with the timing's own
repeatability. Writes docs/tflite_writer_equivalence.md and .json.

  python -m benchmarks.tflite_writer_equivalence --random=200
  taskset -c 0 python -m benchmarks.tflite_writer_equivalence --nocompare --alternation=20
(argparse, not absl flags: the tests import this module's comparison, and flags defined at import would
clash with the tools' in the same test process.)
"""
import argparse
import json
import os
import time

import numpy as np

from benchmarks import provenance, write_json
from ladnas_tf import genotypes, search_space
from ladnas_tf.latency import targets


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--random', type=int, default=200, help='Random genotypes per setting (besides the published).')
    parser.add_argument('--seed', type=int, default=0, help='Seed of the random genotypes.')
    parser.add_argument('--write_repeats', type=int, default=20, help='Repeats of the write-time measurement.')
    parser.add_argument('--output', default='docs/tflite_writer_equivalence', help='Report path without extension.')
    parser.add_argument('--merge', default='',
                        help='Comma-separated reports (.json) of runs with different --seed, run side by side '
                             '(one per core): merged into --output instead of comparing (the published '
                             'genotypes counted once; write times the first report\'s).')
    parser.add_argument('--nocompare', dest='compare', action='store_false',
                        help='Keep the comparison of the existing report (do not compare files again).')
    parser.add_argument('--alternation', type=int, default=0,
                        help='Random CIFAR genotypes whose two files are timed in turn (0: none).')
    parser.add_argument('--rounds', type=int, default=2, help='Timings of each file per genotype in the alternation.')
    return parser.parse_args(argv)

SETTINGS = (targets.Setting('cifar', 36, 20, 32, 1, 10), targets.Setting('imagenet', 48, 14, 224, 1, 1000))
PROTOCOL = dict(warmup=5, runs=20, max_cv=0.05, max_attempts=3)  # the latency table's
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


def write_seconds(write, genotype, setting, repeats):
    """Median CPU seconds (time.process_time) of writing one file with `write`."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        write(genotype, **setting.network_kwargs())
        times.append(time.process_time() - start)
    return float(np.median(times))


def alternation(count, rounds, seed):
    """Per random CIFAR genotype, the converter's file and the profiler's written one, each timed `rounds`
    times with the table's protocol, in turn (C W W C ...: drift falls on both alike); the medians."""
    from ladnas_tf.graph import constant, tflite_writer
    from ladnas_tf.latency import measure
    setting, target = SETTINGS[0], targets.CpuTFLite(1)
    rng, rows = np.random.default_rng(seed + 1), []
    for _ in range(count):
        genotype = search_space.sample_genotype(rng)
        makers = {'converter': constant.genotype_to_tflite, 'writer': tflite_writer.timing_tflite}
        runners = {k: target.runner(make(genotype, **setting.network_kwargs())[0]) for k, make in makers.items()}
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


def compare_all(args):
    from ladnas_tf.graph import tflite_writer
    results = {'random_per_setting': args.random, 'random_seeds': [args.seed], 'settings': {}}
    for setting in SETTINGS:
        rows, started = [], time.process_time()
        for name, genotype in sample(args.random, args.seed):
            difference, relative = compare(genotype, setting)
            rows.append(dict(name=name, genotype=str(genotype), difference=difference, relative_output=relative))
        results['settings'][setting.key] = dict(
            architectures=len(rows), identical=sum(not r['difference'] for r in rows),
            max_relative_output=max(r['relative_output'] for r in rows),
            write_ms=1000 * write_seconds(tflite_writer.write_tflite, genotypes.DARTS_V2, setting,
                                          args.write_repeats),
            timing_write_ms=1000 * write_seconds(tflite_writer.timing_tflite, genotypes.DARTS_V2, setting,
                                                 args.write_repeats),
            cpu_minutes=(time.process_time() - started) / 60,
            differing=[r for r in rows if r['difference']][:20])
        run = dict(results['settings'][setting.key])
        results['settings'][setting.key]['runs'] = {f'seed{args.seed}': run}
    return results


def merge(reports):
    """One report from runs of different seeds: random genotypes added up, the published ones (in every
    run) counted once, CPU minutes added, write times the first run's, each run kept under `runs`."""
    seeds = [seed for r in reports for seed in r['random_seeds']]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f'error: the reports share a seed ({seeds}): their random genotypes are the same')
    merged = {'random_per_setting': sum(r['random_per_setting'] for r in reports), 'random_seeds': seeds,
              'settings': {}}
    for key in reports[0]['settings']:
        parts = [r['settings'][key] for r in reports]
        named_identical = len(genotypes.NAMED) - sum(d['name'] in genotypes.NAMED for d in parts[0]['differing'])
        merged['settings'][key] = dict(
            architectures=sum(p['architectures'] for p in parts) - (len(parts) - 1) * len(genotypes.NAMED),
            identical=sum(p['identical'] for p in parts) - (len(parts) - 1) * named_identical,
            max_relative_output=max(p['max_relative_output'] for p in parts),
            write_ms=parts[0]['write_ms'], timing_write_ms=parts[0]['timing_write_ms'],
            cpu_minutes=sum(p['cpu_minutes'] for p in parts),
            differing=list({(d['name'], d['genotype']): d for p in parts for d in p['differing']}.values())[:20],
            runs={name: run for p in parts for name, run in p['runs'].items()})
    return merged


def main(argv=None):
    args = parse(argv)
    if args.merge:
        reports = []
        for path in args.merge.split(','):
            with open(path, encoding='utf-8') as f:
                reports.append(json.load(f))
        results = merge(reports)
        results['comparison_made_by'] = [r.get('comparison_made_by') for r in reports]
        if os.path.exists(args.output + '.json'):  # an alternation run already there is kept, as --nocompare
            with open(args.output + '.json', encoding='utf-8') as f:
                results.update({k: v for k, v in json.load(f).items() if k == 'alternation'})
    elif args.compare:
        results = compare_all(args)
        results['comparison_made_by'] = provenance()  # the top-level fields name the last run over this file
    else:
        with open(args.output + '.json', encoding='utf-8') as f:
            results = json.load(f)
    if args.alternation:
        results['alternation'] = alternation(args.alternation, args.rounds, args.seed)
        results['alternation']['made_by'] = provenance()
        results['alternation']['cores'] = sorted(os.sched_getaffinity(0))
    results = write_json(args.output + '.json', results, indent=1)
    with open(args.output + '.md', 'w', encoding='utf-8') as f:
        f.write(report(results))
    print(report(results))


def report(results):
    lines = ['# The TFLite writer against the converter', '',
             f'`python -m benchmarks.tflite_writer_equivalence --random={results["random_per_setting"]}`: '
             f'the {len(genotypes.NAMED)} published genotypes and {results["random_per_setting"]} random ones '
             f'(seeds {", ".join(map(str, results.get("random_seeds", [0])))}) per setting, each converted by '
             'the TF converter (graph.constant) and written by '
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
    for key, r in results['settings'].items():
        for row in r['differing']:
            lines.append(f"- {key} {row['name']}: {row['difference'][:300]}")
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
