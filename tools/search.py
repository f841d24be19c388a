"""Differentiable architecture search (DARTS / PC-DARTS, first or second order).

    python -m tools.search                       # offline, minutes on a CPU: the built-in digits, tiny supernet
    python -m tools.search --flagfile=configs/search_darts_cifar10.cfg --dataset=../shared/data/cifar10 \
        --model_dir=runs/search_darts_cifar10

Writes to --model_dir (default runs/search-<time>): config.json and flags.cfg (the effective
settings), checkpoints/, tensorboard/, genotype.json, cells/ (DOT, and PNG by graphviz or else matplotlib) and
summary.json. Killed, the same command resumes where the last checkpoint left it; a directory of
another search is refused without --overwrite. --batch_size is global: split over the replicas of
--strategy (mirrored: the local devices; multi_worker: the cluster in TF_CONFIG).
"""
import math
import os
import time

from absl import flags, logging

from ladnas_tf import distribute, objective, run_dir, search
from ladnas_tf.bad_input import BadInput
from . import cli

FLAGS = flags.FLAGS
# The search's settings are SearchConfig's fields (its defaults and help); --lpm is its lpm_dir.
cli.define_flags(search.SearchConfig)
flags.DEFINE_string('lpm_dir', None, 'Deprecated alias of --lpm (a directory).')
flags.DEFINE_float('noise_sigma', 0.0, 'Shorthand for --latency_error=additive --latency_error_size=SIGMA (the '
                   'paper: 0.025); it does not change the gradient.')
# How this process runs it.
flags.DEFINE_bool('measure_latency', True, 'Time the derived network on the LPM\'s target for summary.json.')
flags.DEFINE_enum('strategy', 'default', distribute.STRATEGIES, 'tf.distribute strategy.')
flags.DEFINE_integer('checkpoint_every', 300, 'Seconds between mid-epoch checkpoints (0 = epoch ends only).')
flags.DEFINE_bool('deterministic', True, 'TensorFlow op determinism: a resumed run ends as an uninterrupted one.')
flags.DEFINE_string('model_dir', None, 'Run directory (default runs/search-<time>).')
flags.DEFINE_bool('overwrite', False, 'Replace an existing run directory.')
flags.DEFINE_bool('progress', True, 'A progress bar per epoch.')


def lpm_from_flags():
    """The predictor --lpm (or the deprecated --lpm_dir) names, None for none. search.search loads it
    once, so a bad name or an LPM of another search space fails before anything is written."""
    value = FLAGS.lpm
    if FLAGS.lpm_dir is not None:
        logging.warning('--lpm_dir is deprecated: use --lpm (a name or a directory)')
        value = FLAGS.lpm_dir
    return value or None


def config_from_flags():
    """The SearchConfig the flags describe (tools.sweep varies it)."""
    return cli.config_from_flags(search.SearchConfig, lpm_dir=lpm_from_flags(), **_latency_error_from_flags())


def _latency_error_from_flags():
    """SearchConfig's latency_error fields; --noise_sigma is the additive model's shorthand."""
    for name in ('latency_error_size', 'noise_sigma'):
        if not math.isfinite(FLAGS[name].value) or FLAGS[name].value < 0:
            raise BadInput(f'--{name} must be a finite number >= 0, got {FLAGS[name].value}')
    if not FLAGS.noise_sigma:
        return {}
    if FLAGS.latency_error != 'none':
        raise BadInput('--noise_sigma is --latency_error=additive: give one of the two')
    return {'latency_error': 'additive', 'latency_error_size': FLAGS.noise_sigma}


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments {argv[1:]}')
    import tensorflow as tf
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    # Before anything runs an op (loading the LPM does): multi_worker configures the collective ops.
    strategy = distribute.make_strategy(FLAGS.strategy)
    config = config_from_flags()
    config.check()
    model_dir = FLAGS.model_dir or os.path.join('runs', time.strftime('search-%Y%m%d-%H%M%S'))
    summary = search.search(config, model_dir, FLAGS.overwrite, strategy, checkpoint_every=FLAGS.checkpoint_every,
                            progress=FLAGS.progress, flags_text=FLAGS.flags_into_string(), log=logging.info,
                            measure_latency=FLAGS.measure_latency,
                            step_callback=run_dir.step_callback_from_env())
    train_acc = summary['supernet_train_accuracy']
    print(f"genotype: {summary['genotype']}")
    print(f"{summary['steps']} steps, supernet accuracy train "
          f"{'n/a' if train_acc is None else f'{train_acc:.2f}%'} valid {summary['supernet_valid_accuracy']:.2f}%, "
          f"{summary['seconds']:.0f} s")
    lat = summary.get('latency') or {}
    if objective.comparison_text(lat):  # each figure beside DARTS_V2 on its own device
        print(f"latency at {lat['setting']}: {objective.comparison_text(lat)}")
    if 'lambda_' in lat:
        print(f"lambda_ {lat['lambda_']:.4g} per DARTS_V2's predicted latency")
    print(f"outputs in {model_dir}: {', '.join(search.OUTPUTS)}")


if __name__ == '__main__':
    cli.run(main)
