"""A lambda_ / eta sweep of the search: one search per value, then a table and a figure of measured
latency, MACs and supernet accuracy (the paper's Figure 4 and Table 4 analogues).

    python -m tools.sweep --flagfile=configs/sweep_cifar10.cfg --dataset=../shared/data/cifar10 \
        --out_dir=runs/sweep_cifar10

Takes every flag of tools.search as the base settings; --lambdas and --etas list the values. Killed,
the same command resumes (each search in out_dir/<run> resumes or is reported again).
"""
import dataclasses
import math
import os


from absl import flags, logging

from ladnas_tf.bad_input import BadInput
from . import cli
from . import search as search_tool  # the search's flags are the sweep's base settings

FLAGS = flags.FLAGS
flags.DEFINE_list('lambdas', ['0', '0.1', '0.15', '0.2'],
                  "lambda_ values (in units of DARTS_V2's predicted latency) of the latency-aware runs.")
flags.DEFINE_list('etas', [], "eta values (in units of DARTS_V2's MACs) of FLOPs-aware runs.")
flags.DEFINE_integer('retime_rounds', 3, 'At the end, time every derived network again, all in alternation, '
                     'this many rounds (0 = off).')
flags.DEFINE_string('out_dir', 'runs/sweep', 'The sweep directory: one run directory per value, sweep.csv, sweep.png.')
flags.DEFINE_list('latency_errors', [], 'Latency error models to search with, each at every --error_lambdas value: '
                  'additive:SIGMA_MS, multiplicative:SIGMA, systematic:MRE, predictor:LPM (see tools.search '
                  '--latency_error).')
flags.DEFINE_list('error_lambdas', ['0.2'], 'lambda_ values of the --latency_errors runs.')
flags.DEFINE_list('seeds', [], 'Run everything once per seed (default: once, at --seed).')
flags.DEFINE_list('eta_seeds', None, 'Seeds of the FLOPs-aware runs (default: all of --seeds).')
flags.DEFINE_bool('finished_only', False, 'Run no search: table, figures and re-timing of the finished ones only '
                  '(a sweep stopped by its time budget).')


def _numbers(name, kind):
    """A list flag's values as finite numbers of `kind`, refused in one line otherwise."""
    try:
        values = [kind(v) for v in FLAGS[name].value]
    except ValueError as e:
        raise BadInput(f'--{name} must list numbers ({e})') from None
    if not all(math.isfinite(v) for v in values):
        raise BadInput(f'--{name} must list finite numbers, got {FLAGS[name].value}')
    return values


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments {argv[1:]}')
    lambdas, etas, error_lambdas = (_numbers(name, float) for name in ('lambdas', 'etas', 'error_lambdas'))
    seeds = _numbers('seeds', int) or None
    eta_seeds = None if FLAGS.eta_seeds is None else _numbers('eta_seeds', int)
    import tensorflow as tf
    from ladnas_tf import sweep
    from ladnas_tf.cost import errors
    from ladnas_tf.lpm import registry
    latency_errors = [errors.parse(text) for text in FLAGS.latency_errors]
    latency_errors = [dataclasses.replace(e, lpm_dir=registry.resolve(e.lpm_dir)) if e.lpm_dir else e
                      for e in latency_errors]  # predictor:NAME as --lpm takes it
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    df = sweep.run(search_tool.config_from_flags(), FLAGS.out_dir, lambdas, etas, log=logging.info,
                   checkpoint_every=FLAGS.checkpoint_every, progress=FLAGS.progress,
                   measure_latency=FLAGS.measure_latency, retime_rounds=FLAGS.retime_rounds,
                   latency_errors=latency_errors, error_lambdas=error_lambdas if latency_errors else (),
                   seeds=seeds, eta_seeds=eta_seeds, finished_only=FLAGS.finished_only)
    columns = ['run', 'supernet_valid_accuracy', 'predicted_ms', 'measured_ms', 'measured_norm_ms', 'macs']
    columns += ['retimed_ms'] if 'retimed_ms' in df else []
    print(df[columns].to_string(index=False, float_format=lambda v: f'{v:.2f}'))
    print(f'table {os.path.join(FLAGS.out_dir, sweep.TABLE)}, figure {os.path.join(FLAGS.out_dir, sweep.FIGURE)}')


if __name__ == '__main__':
    cli.run(main)
