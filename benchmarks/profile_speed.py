"""Profiling throughput as archs/hour: the naive path, the profiler converting, the profiler writing files.

naive:     build the Keras network, TFLiteConverter.from_keras_model(...).convert(), then time.
converter: the constant graph (ladnas_tf.graph.constant) converted by worker processes ahead of serial
           timing (ladnas_tf.profiling.profiler.Profiler), conversion never overlapping a timed run; it also
           times the reference network around every architecture (extra work naive skips).
writer:    the same profiler with the file written directly (ladnas_tf.graph.tflite_writer).
--target=cpu_tflite_int8 compares the two profiler paths on full-integer int8 files (converter with
calibration against ladnas_tf.graph.tflite_int8_writer); naive, a float32 path, is then left out.
All time with the same protocol on the same architectures of the same stream. With --repeatability=K,
each profiler path then re-times K of its rows as tools.profile_latency --repeatability does
(profile.repeatability: |second - first| / first), so the faster path is shown to time as steadily.

  taskset -c 0 python -m benchmarks.profile_speed --naive=0 --ours=60 --repeatability=30 \
      --json=docs/benchmarks/profile_speed.json
  taskset -c 0 python -m benchmarks.profile_speed --target=cpu_tflite_int8 --ours=60 --repeatability=30 \
      --json=docs/benchmarks/profile_speed_int8.json
"""
import os
import tempfile
import time

from absl import app, flags

from ladnas_tf import network
from ladnas_tf.graph.setting import Setting
from ladnas_tf.profiling import measure, profiler as profile
from ladnas_tf.profiling.targets import local

FLAGS = flags.FLAGS
flags.DEFINE_integer('naive', 3, 'Architectures through the naive path (0: skip it).')
flags.DEFINE_integer('ours', 24, 'Architectures through each profiler path (converter, writer).')
flags.DEFINE_integer('repeatability', 0, 'Rows of each profiler path re-timed for the repeatability figure.')
flags.DEFINE_string('json', None, 'Also write the figures to this JSON file.')
flags.DEFINE_enum('target', 'cpu_tflite', ['cpu_tflite', 'cpu_tflite_int8'],
                  'The files timed: float32, or full-integer int8 (then no naive path).')

SETTING = Setting('cifar', 36, 20, 32, 1, 10)
PROTOCOL = dict(warmup=5, runs=20, max_cv=0.05, max_attempts=3)
SEED = 123


def naive(genotype):
    import tensorflow as tf
    model = network.build_network(genotype, 'cifar', SETTING.channels, SETTING.num_cells,
                                  SETTING.num_classes, image_size=SETTING.image_size)
    tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    return measure.measure(local.CpuTFLite(1).runner(tflite), **PROTOCOL)[0]


def busy_fractions():
    """Per core, (busy, total) jiffies since boot (/proc/stat): differences give each core's load."""
    with open('/proc/stat') as f:
        rows = [line.split() for line in f if line.startswith('cpu') and line[3].isdigit()]
    return {row[0]: (sum(map(int, row[1:4])) + sum(map(int, row[6:9])), sum(map(int, row[1:9]))) for row in rows}


def other_cores_load(before, after):
    """Load of the cores this process may not use, over the run (0..1 each)."""
    mine = {f'cpu{c}' for c in os.sched_getaffinity(0)}
    return {cpu: round((after[cpu][0] - before[cpu][0]) / max(1, after[cpu][1] - before[cpu][1]), 3)
            for cpu in before if cpu not in mine}


def profile_path(source, tmp):
    """archs, seconds per arch, median latencies and the repeatability summary of one profiler path."""
    path = os.path.join(tmp, f'{source}.csv')
    kind = local.CpuTFLiteInt8 if FLAGS.target == 'cpu_tflite_int8' else local.CpuTFLite
    target = kind(1, tflite_source=source)
    profiler = profile.Profiler(target, SETTING, path, **PROTOCOL)
    start = time.time()
    profiler.run(FLAGS.ours, seed=SEED)  # includes starting the workers
    seconds = (time.time() - start) / FLAGS.ours
    out = {'archs': FLAGS.ours, 'seconds_per_arch': seconds, 'archs_per_hour': 3600 / seconds}
    if FLAGS.repeatability:
        out['repeatability'] = profile.repeatability(profiler, FLAGS.repeatability, seed=0)
    import pandas as pd
    return out, pd.read_csv(path)['latency_ms'].tolist()


def main(argv):
    del argv
    load_before = busy_fractions()
    genotypes_ = [g for _, (_, g) in zip(range(max(FLAGS.naive, 1)), profile.architectures(SEED))]
    figures, latencies = {'setting': SETTING.key, 'target': FLAGS.target, 'protocol': PROTOCOL}, {}
    if FLAGS.naive and FLAGS.target == 'cpu_tflite':
        start = time.time()
        latencies['naive'] = [naive(g).latency_ms for g in genotypes_[:FLAGS.naive]]
        seconds = (time.time() - start) / FLAGS.naive
        figures['naive'] = {'archs': FLAGS.naive, 'seconds_per_arch': seconds, 'archs_per_hour': 3600 / seconds}
    with tempfile.TemporaryDirectory() as tmp:
        for source in ('converter', 'writer'):
            figures[source], latencies[source] = profile_path(source, tmp)
    figures['writer_over_converter'] = figures['writer']['archs_per_hour'] / figures['converter']['archs_per_hour']
    figures['median_latency_ms'] = {k: v[:10] for k, v in latencies.items()}
    figures['other_cores_load'] = other_cores_load(load_before, busy_fractions())
    report(figures)
    if FLAGS.json:
        from benchmarks import save_json
        save_json(FLAGS.json, figures, {'target': FLAGS.target, 'naive': figures.get('naive', {}).get('archs', 0),
                                        'ours': FLAGS.ours,
                                        'repeatability': FLAGS.repeatability, 'seed': SEED,
                                        'cores': sorted(os.sched_getaffinity(0))})


def report(figures):
    print(f'target {figures["target"]}, setting {SETTING.key}, {os.cpu_count()} cores, '
          f'this run on cores {sorted(os.sched_getaffinity(0))}, '
          f'load of the others {figures["other_cores_load"]}')
    for name in ('naive', 'converter', 'writer'):
        if name in figures:
            f = figures[name]
            rep = f.get('repeatability')
            steady = (f'  repeatability median |diff| raw {rep["raw_median_rel_diff"]:.2%}, '
                      f'normalised {rep["normalised_median_rel_diff"]:.2%} ({rep["pairs"]} pairs)') if rep else ''
            print(f'{name:9s} {f["seconds_per_arch"]:6.2f} s/arch {f["archs_per_hour"]:7.0f} archs/hour '
                  f'({f["archs"]} archs){steady}')
    print(f'writer / converter: {figures["writer_over_converter"]:.1f}x')


if __name__ == '__main__':
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    app.run(main)
