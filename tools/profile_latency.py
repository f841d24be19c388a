"""Profile random architectures of the DARTS space on a target into a durable latency table.

  python -m tools.profile_latency --flagfile=configs/profile_cpu_cifar.cfg --count=3000
  python -m tools.profile_latency --target=ssh --device=pi@board --table=data/pi.csv --calibration=20
  python -m tools.profile_latency --target=adb --adb_serial=R58M --table=data/phone.csv --calibration=20
  python -m tools.profile_latency --target=ssh --device=pi@board --numeric_format=int8 --table=data/pi_int8.csv
  python -m tools.profile_latency --target=ssh --device=pi@board1,pi@board2 --table=data/pi.csv --count=3000

ssh: the device needs Python 3 with numpy and ai-edge-litert (`pip install ai-edge-litert`); adb: TFLite's
benchmark_model pushed once (`adb push benchmark_model /data/local/tmp/`). --calibration=N times N
architectures spread over the base predictor's (--lpm) latency range, DARTS_V2 included, for
`tools.adapt_lpm`. Several devices of one model (`--device=a,b`, `--adb_serial=s1,s2`) are a fleet: they
share the stream and the table, each row naming its device, and one that drops out leaves its share to
the others (profiling/fleet.py).
"""
import os

from absl import flags, logging

from ladnas_tf.bad_input import BadInput
from ladnas_tf.graph.setting import Setting
from ladnas_tf.profiling import fleet, profiler, report, table
from ladnas_tf.profiling.targets import registry as targets
from . import cli

FLAGS = flags.FLAGS
flags.DEFINE_enum('target', 'cpu_tflite', list(targets.KINDS), 'Where to time.')
flags.DEFINE_string('table', 'data/cpu_tflite_cifar.csv', 'The latency table (CSV) to create or resume.')
flags.DEFINE_integer('count', 100, 'Architectures the table should hold when done.', lower_bound=0)
flags.DEFINE_integer('seed', 0, 'Seed of the stream of random architectures.')
flags.DEFINE_integer('shard_index', 0, 'This machine\'s shard of the stream.', lower_bound=0)
flags.DEFINE_integer('num_shards', 1, 'Machines profiling the same stream.', lower_bound=1)
flags.DEFINE_enum('setting', 'cifar', ['cifar', 'imagenet'], 'Evaluation network family.')
flags.DEFINE_integer('channels', 36, 'Initial channels C.', lower_bound=2)
flags.DEFINE_integer('cells', 20, 'Cells in the network.', lower_bound=1)
flags.DEFINE_integer('image_size', 32, 'Input height and width.', lower_bound=8)
flags.DEFINE_integer('batch_size', 1, 'Batch size of a timed inference.', lower_bound=1)
flags.DEFINE_integer('num_classes', 10, 'Classifier outputs.', lower_bound=1)
flags.DEFINE_integer('threads', 1, 'Interpreter threads (cpu_tflite).', lower_bound=1)
flags.DEFINE_integer('warmup', 5, 'Untimed runs before timing.', lower_bound=0)
flags.DEFINE_integer('runs', 20, 'Timed runs; the label is their median.', lower_bound=2)
flags.DEFINE_float('max_cv', 0.05, 'Re-measure while std/mean exceeds this.', lower_bound=0)
flags.DEFINE_integer('max_attempts', 3, 'Measurements of one architecture at most.', lower_bound=1)
flags.DEFINE_integer('reference_runs', 5, 'Timed runs of the reference network just before and just '
                     'after each architecture.', lower_bound=1)
flags.DEFINE_integer('workers', 2, 'Conversion processes (they never run while timing).', lower_bound=1)
flags.DEFINE_integer('batch', 8, 'Architectures converted ahead per timing round.', lower_bound=1)
flags.DEFINE_integer('timing_cpu', -1, 'Pin the timing process to this core (-1: no pinning).')
flags.DEFINE_integer('repeatability', 0, 'Instead of profiling, re-time this many measured rows and '
                     'report the relative difference between the two measurements.', lower_bound=0)
flags.DEFINE_string('plot', None, 'Also write latency against MACs to this PNG.')
flags.DEFINE_integer('calibration', 0, 'Instead of the random stream, time this many architectures that '
                     'cover the --lpm predictor\'s latency range (stratified; DARTS_V2 included).', lower_bound=0)
flags.DEFINE_string('lpm', 'cpu_tflite_cifar', 'Base predictor (name or directory) whose range --calibration covers.')
# the kinds' options (--device, --ssh_key, --adb_serial, --delegate, --retries, ...), defaults on the kinds
cli.define_option_flags(targets.options())


def calibration_set(setting):
    """--calibration architectures of the base predictor, which must be of this setting."""
    from ladnas_tf.lpm import adapt, registry
    base = registry.load(FLAGS.lpm, setting=setting.key)
    return adapt.calibration_genotypes(base, FLAGS.calibration, FLAGS.seed)


def main(argv):
    del argv
    setting = Setting(FLAGS.setting, FLAGS.channels, FLAGS.cells, FLAGS.image_size, FLAGS.batch_size,
                      FLAGS.num_classes)
    chosen = calibration_set(setting) if FLAGS.calibration else None
    devices = fleet.make_targets(FLAGS.target, FLAGS.threads,
                                 **cli.option_values(targets.target_class(FLAGS.target).OPTIONS))
    target = devices[0] if len(devices) == 1 else fleet.Fleet(devices)
    own = getattr(devices[0], 'numeric_format', 'float32')
    if FLAGS['numeric_format'].present and FLAGS.numeric_format != own:  # the cpu kinds have their own
        raise BadInput(f'--numeric_format={FLAGS.numeric_format} does not apply to --target={FLAGS.target} '
                       f'(it times {own} files; int8 here: --target=cpu_tflite_int8)')
    target.check_available()
    allowed = os.sched_getaffinity(0)  # what the user gave this process (taskset): the workers keep to it
    if FLAGS.timing_cpu >= 0:
        if FLAGS.timing_cpu not in allowed:
            raise BadInput(f'--timing_cpu={FLAGS.timing_cpu}: this process may run on cores '
                             f'{",".join(map(str, sorted(allowed)))} only')
        os.sched_setaffinity(0, {FLAGS.timing_cpu})
    timer = profiler.Profiler(target, setting, FLAGS.table, FLAGS.warmup, FLAGS.runs, FLAGS.max_cv,
                              FLAGS.max_attempts, FLAGS.reference_runs, FLAGS.workers, FLAGS.batch,
                              worker_cpus=allowed)
    if FLAGS.repeatability:
        summary = profiler.repeatability(timer, FLAGS.repeatability, FLAGS.seed)
        print(f'repeatability over {summary["pairs"]} re-timed architectures:')
        for kind in ('raw', 'normalised'):
            print(f'  {kind:10s} relative difference: mean {100 * summary[f"{kind}_mean_rel_diff"]:.2f}%, '
                  f'median {100 * summary[f"{kind}_median_rel_diff"]:.2f}%, '
                  f'90th percentile {100 * summary[f"{kind}_p90_rel_diff"]:.2f}%')
        return
    logging.info('table %s holds %d rows; measuring up to %d', FLAGS.table, len(timer.table), FLAGS.count)

    def progress(done, todo, stats):
        logging.info('[%d/%d] %.3f ms (cv %.3f)', done, todo, stats.latency_ms, stats.cv)
    if chosen is not None:
        added = timer.run_genotypes(chosen, progress)
    else:
        added = timer.run(FLAGS.count, FLAGS.seed, FLAGS.shard_index, FLAGS.num_shards, progress)
    print(f'added {added} rows; {FLAGS.table} holds {len(timer.table)}')
    left = target.device_files()  # remote kinds keep a bounded cache of model files on the device
    if left is not None:
        print(f'left on the device: {left[0]} model files, {left[1] / 1e6:.1f} MB (--device_cache_mb)')
    if FLAGS.plot:
        spread = report.plot_latency_vs_macs(table.read(FLAGS.table), FLAGS.plot, setting.key)
        print(f'wrote {FLAGS.plot}; at equal MACs the fastest is {100 * spread["min_vs_max"]:.1f}% below '
              f'the slowest and {100 * spread["min_vs_median"]:.1f}% below the median (quiet rows: '
              f'{100 * spread["quiet"]["min_vs_max"]:.1f}% and {100 * spread["quiet"]["min_vs_median"]:.1f}%)')


if __name__ == '__main__':
    cli.run(main)
