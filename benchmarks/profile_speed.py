"""Profiling throughput: the naive path against ours, side by side in one run, as archs/hour.

naive: build the Keras network, TFLiteConverter.from_keras_model(...).convert(), then time.
ours:  the constant graph (ladnas_tf.graph.constant) converted by worker processes ahead of
       serial timing (ladnas_tf.latency.profile.Profiler), conversion never overlapping a timed run;
       ours also times the reference network around every architecture (extra work naive skips).
Both time with the same protocol (measure.measure) on the same architectures of the same stream.

  python -m benchmarks.profile_speed --naive=3 --ours=24 [--json=docs/benchmarks/profile_speed.json]
"""
import os
import tempfile
import time

from absl import app, flags

from ladnas_tf import network
from ladnas_tf.latency import measure, profile, targets

FLAGS = flags.FLAGS
flags.DEFINE_integer('naive', 3, 'Architectures through the naive path.')
flags.DEFINE_integer('ours', 24, 'Architectures through the profiler.')
flags.DEFINE_string('json', None, 'Also write the figures to this JSON file.')

SETTING = targets.Setting('cifar', 36, 20, 32, 1, 10)
PROTOCOL = dict(warmup=5, runs=20, max_cv=0.05, max_attempts=3)


def naive(genotype):
    import tensorflow as tf
    model = network.build_network(genotype, 'cifar', SETTING.channels, SETTING.num_cells,
                                  SETTING.num_classes, image_size=SETTING.image_size)
    tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    return measure.measure(targets.CpuTFLite(1).runner(tflite), **PROTOCOL)[0]


def main(argv):
    del argv
    genotypes_ = [g for _, (_, g) in zip(range(max(FLAGS.naive, FLAGS.ours)), profile.architectures(123))]
    start = time.time()
    naive_ms = [naive(g).latency_ms for g in genotypes_[:FLAGS.naive]]
    naive_s = (time.time() - start) / FLAGS.naive

    with tempfile.TemporaryDirectory() as tmp:
        profiler = profile.Profiler(targets.CpuTFLite(1), SETTING, os.path.join(tmp, 't.csv'),
                                    **PROTOCOL)
        start = time.time()
        profiler.run(FLAGS.ours, seed=123)  # includes starting the conversion workers
        ours_s = (time.time() - start) / FLAGS.ours
        import pandas as pd
        ours_ms = pd.read_csv(os.path.join(tmp, 't.csv'))['latency_ms'].tolist()

    print(f'setting {SETTING.key}, {os.cpu_count()} cores')
    print(f'naive (Keras + from_keras_model): {naive_s:7.1f} s/arch  {3600 / naive_s:7.0f} archs/hour  '
          f'({FLAGS.naive} archs)')
    print(f'ours  (constant graph, parallel): {ours_s:7.1f} s/arch  {3600 / ours_s:7.0f} archs/hour  '
          f'({FLAGS.ours} archs)')
    print(f'speed-up: {naive_s / ours_s:.1f}x')
    both = min(len(naive_ms), len(ours_ms))
    print('same architectures, median latency naive vs ours (ms): ' +
          ', '.join(f'{a:.2f}/{b:.2f}' for a, b in zip(naive_ms[:both], ours_ms[:both])))
    if FLAGS.json:
        from benchmarks import save_json
        path = lambda n, s: {'archs': n, 'seconds_per_arch': s, 'archs_per_hour': 3600 / s}
        save_json(FLAGS.json, {
            'setting': SETTING.key, 'protocol': PROTOCOL, 'naive': path(FLAGS.naive, naive_s),
            'ours': path(FLAGS.ours, ours_s), 'speed_up': naive_s / ours_s,
            'median_latency_ms_naive_vs_ours': [[a, b] for a, b in zip(naive_ms[:both], ours_ms[:both])]},
            {'naive': FLAGS.naive, 'ours': FLAGS.ours})


if __name__ == '__main__':
    app.run(main)
