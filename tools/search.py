"""Differentiable architecture search (DARTS / PC-DARTS, first or second order).

    python -m tools.search                       # offline, minutes on a CPU: the built-in digits, tiny supernet
    python -m tools.search --flagfile=configs/search_darts_cifar10.cfg --dataset=../shared/data/cifar10 \
        --model_dir=runs/search_darts_cifar10

Writes to --model_dir (default runs/search-<time>): config.json and flags.cfg (the effective
settings), checkpoints/, tensorboard/, genotype.json, cells/ (DOT, and PNG/PDF with graphviz) and
summary.json. Killed, the same command resumes where the last checkpoint left it; a directory of
another search is refused without --overwrite. --batch_size is global: split over the replicas of
--strategy (mirrored: the local devices; multi_worker: the cluster in TF_CONFIG).
"""
import math
import os
import time


from absl import flags, logging

from ladnas_tf.bad_input import BadInput
from . import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('dataset', 'digits', "digits (built in), cifar10, imagenet2012, or an image folder's path.")
flags.DEFINE_string('data_dir', None, 'tfds data_dir (or the folder of dataset=folder).')
flags.DEFINE_enum('method', 'darts', ['darts', 'pcdarts'],
                  'DARTS, or PC-DARTS (partial channels + edge normalisation).')
flags.DEFINE_enum('order', 'first', ['first', 'second'], 'First-order, or DARTS\'s unrolled second-order step.')
flags.DEFINE_integer('epochs', 4, 'Search epochs.')
flags.DEFINE_integer('batch_size', 32, 'Global batch size of both halves.')
flags.DEFINE_float('learning_rate', 0.025, 'Initial weight learning rate (cosine to --learning_rate_min).')
flags.DEFINE_float('learning_rate_min', 0.001, 'Final weight learning rate.')
flags.DEFINE_float('momentum', 0.9, 'Weight SGD momentum.')
flags.DEFINE_float('weight_decay', 3e-4, 'Weight L2 decay (added to the gradients).')
flags.DEFINE_float('grad_clip', 5.0, 'Global-norm clip of the weight gradients (0 = off).')
flags.DEFINE_float('arch_learning_rate', 3e-4, 'Adam learning rate of alpha (and beta).')
flags.DEFINE_float('arch_weight_decay', 1e-3, 'L2 decay of alpha (and beta).')
flags.DEFINE_integer('channels', 8, 'Initial channels C of the supernet.')
flags.DEFINE_integer('layers', 5, 'Cells of the supernet.')
flags.DEFINE_integer('image_size', None, "Input side (default: the dataset's own; digits 16).")
flags.DEFINE_integer('partial_channels', 4, "PC-DARTS's K: 1/K of the channels go through the ops.")
flags.DEFINE_integer('warmup_epochs', 0, 'Epochs with alpha frozen (PC-DARTS: 15).')
flags.DEFINE_bool('recompute', False, 'Re-run each mixed op\'s forward pass for its gradient (gradient '
                  'checkpointing): ~0.65x the memory above import for ~1.2x the step time.')
flags.DEFINE_float('train_portion', 0.5, 'Share of the training split in the weight half.')
flags.DEFINE_integer('seed', 0, 'Seed of initialisation, split, shuffling and augmentation.')
flags.DEFINE_integer('max_steps_per_epoch', None, 'Cap on steps and evaluation batches per epoch.')
flags.DEFINE_integer('final_eval_batches', None, 'Batches of the final, reported supernet evaluation '
                     '(default: --max_steps_per_epoch\'s cap).')
flags.DEFINE_bool('augment', True, "DARTS's crop + flip on the training batches (never on the digits).")
flags.DEFINE_float('lambda_', 0.1,
                   "Weight of LAT(alpha) in units of DARTS_V2's predicted latency (paper Eq. 3; 0 = plain).")
flags.DEFINE_float('eta', 0.0,
                   "Weight of FLOPs(alpha) in units of DARTS_V2's MACs: the FLOPs-aware baseline (needs --lambda_=0).")
flags.DEFINE_string('lpm', 'cpu_tflite_cifar', 'The latency predictor of the target: a name (python -m tools.lpms '
                    'lists them) or an LPM directory (default: the shipped CPU TFLite one; empty: none).')
flags.DEFINE_string('lpm_dir', None, 'Deprecated alias of --lpm (a directory).')
flags.DEFINE_float('target_latency_ms', None, 'Adapt lambda_ (dual ascent) so that LAT(alpha) meets this latency.')
flags.DEFINE_integer('lat_samples', 20, 'M: sub-networks sampled per LAT(alpha) estimate.')
flags.DEFINE_string('latency_error', 'none', 'What the search believes in place of the LPM (summary.json reports '
                    'the true prediction): none | additive | multiplicative | systematic | predictor.')
flags.DEFINE_float('latency_error_size', 0.0, 'additive: sigma (ms) of N(0, sigma) added to LAT(alpha), which does '
                   'not change d LAT/d alpha (the search stays the same); multiplicative: sigma of e in each sampled '
                   'sub-network\'s prediction x (1 + e), fresh per sample and step; systematic: the MRE (0.1 = 10%) '
                   'of a fixed architecture-dependent error against the LPM.')
flags.DEFINE_string('latency_error_lpm', None, '--latency_error=predictor: the worse LPM the search reads (a name '
                    'or a directory, as --lpm).')
flags.DEFINE_float('noise_sigma', 0.0, 'Shorthand for --latency_error=additive --latency_error_size=SIGMA (the '
                   'paper: 0.025); it does not change the gradient.')
flags.DEFINE_bool('measure_latency', True, 'Time the derived network on the LPM\'s target for summary.json.')
flags.DEFINE_enum('strategy', 'default', ['default', 'mirrored', 'multi_worker'], 'tf.distribute strategy.')
flags.DEFINE_integer('checkpoint_every', 300, 'Seconds between mid-epoch checkpoints (0 = epoch ends only).')
flags.DEFINE_bool('deterministic', True, 'TensorFlow op determinism: a resumed run ends as an uninterrupted one.')
flags.DEFINE_string('model_dir', None, 'Run directory (default runs/search-<time>).')
flags.DEFINE_bool('overwrite', False, 'Replace an existing run directory.')
flags.DEFINE_bool('progress', True, 'A progress bar per epoch.')


def lpm_from_flags():
    """The LPM directory --lpm (or the deprecated --lpm_dir) names, None for none; resolved and loaded
    once here, so a bad name or an LPM of another search space fails before anything is written."""
    value = FLAGS.lpm
    if FLAGS.lpm_dir is not None:
        logging.warning('--lpm_dir is deprecated: use --lpm (a name or a directory)')
        value = FLAGS.lpm_dir
    if not value:
        return None
    from ladnas_tf.latency import lpm, registry
    path = registry.resolve(value)
    lpm.LPM.load(path)
    return path


def can_time(lpm_dir, log=logging.info):
    """Whether this machine can time on the LPM's target (an LPM made on an ssh board or a phone names a
    target this machine may not reach): the search still runs, only the final measurement is skipped."""
    if not lpm_dir:
        return True
    from ladnas_tf.latency import lpm, targets
    meta = lpm.LPM.load(lpm_dir).metadata
    try:
        targets.target_of_lpm(meta).check_available()
    except targets.TargetError as e:
        log(f'not timing the derived network: {e}')
        return False
    return True


def config_from_flags():
    """The SearchConfig the flags describe (tools.sweep varies it)."""
    from ladnas_tf import search
    return search.SearchConfig(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, method=FLAGS.method, order=FLAGS.order,
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        learning_rate_min=FLAGS.learning_rate_min, momentum=FLAGS.momentum, weight_decay=FLAGS.weight_decay,
        grad_clip=FLAGS.grad_clip, arch_learning_rate=FLAGS.arch_learning_rate,
        arch_weight_decay=FLAGS.arch_weight_decay, channels=FLAGS.channels, layers=FLAGS.layers,
        image_size=FLAGS.image_size, partial_channels=FLAGS.partial_channels, warmup_epochs=FLAGS.warmup_epochs,
        recompute=FLAGS.recompute,
        train_portion=FLAGS.train_portion, seed=FLAGS.seed, max_steps_per_epoch=FLAGS.max_steps_per_epoch,
        final_eval_batches=FLAGS.final_eval_batches,
        augment=FLAGS.augment, lambda_=FLAGS.lambda_, eta=FLAGS.eta, lpm_dir=lpm_from_flags(),
        target_latency_ms=FLAGS.target_latency_ms, lat_samples=FLAGS.lat_samples, **_latency_error_from_flags())


def _latency_error_from_flags():
    """SearchConfig's latency_error fields; --noise_sigma is the additive model's shorthand."""
    for name in ('latency_error_size', 'noise_sigma'):
        if not math.isfinite(FLAGS[name].value) or FLAGS[name].value < 0:
            raise BadInput(f'--{name} must be a finite number >= 0, got {FLAGS[name].value}')
    kind, size = FLAGS.latency_error, FLAGS.latency_error_size
    if FLAGS.noise_sigma:
        if kind != 'none':
            raise BadInput('--noise_sigma is --latency_error=additive: give one of the two')
        kind, size = 'additive', FLAGS.noise_sigma
    worse = FLAGS.latency_error_lpm
    if worse:  # a name (tools.lpms) or a directory, as --lpm
        from ladnas_tf.latency import registry
        worse = registry.resolve(worse)
    return {'latency_error': kind, 'latency_error_size': size, 'latency_error_lpm': worse}


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments {argv[1:]}')
    from ladnas_tf import search
    config = config_from_flags()
    config.check()
    model_dir = FLAGS.model_dir or os.path.join('runs', time.strftime('search-%Y%m%d-%H%M%S'))
    import tensorflow as tf
    from ladnas_tf import train
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = train.make_strategy(FLAGS.strategy)
    summary = search.search(config, model_dir, FLAGS.overwrite, strategy, checkpoint_every=FLAGS.checkpoint_every,
                            progress=FLAGS.progress, flags_text=FLAGS.flags_into_string(), log=logging.info,
                            measure_latency=FLAGS.measure_latency and can_time(None if config.eta else config.lpm_dir))
    train_acc = summary['supernet_train_accuracy']
    print(f"genotype: {summary['genotype']}")
    print(f"{summary['steps']} steps, supernet accuracy train "
          f"{'n/a' if train_acc is None else f'{train_acc:.2f}%'} valid {summary['supernet_valid_accuracy']:.2f}%, "
          f"{summary['seconds']:.0f} s")
    lat = summary.get('latency') or {}
    if 'predicted_ms' in lat:
        print(f"latency on {lat['target']} ({lat['setting']}): predicted {lat['predicted_ms']:.2f} ms"
              + (f", measured {lat['measured_ms']:.2f} ms ({lat['measured_vs_reference']:.2f}x DARTS_V2 timed "
                 f"alongside)" if 'measured_ms' in lat else '')
              + f", lambda_ {lat['lambda_']:.4g} per {lat['unit_ms']:.2f} ms (DARTS_V2)")
    elif 'measured_ms' in lat:
        print(f"latency on {lat['target']} ({lat['setting']}): measured {lat['measured_ms']:.2f} ms "
              f"({lat['measured_vs_reference']:.2f}x DARTS_V2 timed alongside)")
    print(f'outputs in {model_dir}: genotype.json, summary.json, cells/, tensorboard/, checkpoints/')


if __name__ == '__main__':
    cli.run(main)
