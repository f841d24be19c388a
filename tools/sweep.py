"""A lambda_ / eta sweep of the search: one search per value, then a table and a figure of measured
latency, MACs and supernet accuracy (the paper's Figure 4 and Table 4 analogues).

    python -m tools.sweep --flagfile=configs/sweep_cifar10.cfg --dataset=../shared/data/cifar10 \
        --out_dir=runs/sweep_cifar10

Takes every flag of tools.search as the base settings; --lambdas and --etas list the values. Killed,
the same command resumes (each search in out_dir/<run> resumes or is reported again).

Over several machines: the same command on each with --num_workers=N --worker_index=i (or --points=
names of the plan's runs) runs that machine's share; then on one machine, with every share's sweep
directory at hand, the same command with --merge_from=DIR,... (the others' directories; none when all
wrote to one shared --out_dir) writes the table and figure of the whole sweep. No finished point runs twice.
"""

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
flags.DEFINE_list('points', None, 'Run only these points of the plan (run names, e.g. lambda_0,eta_0.1).')
flags.DEFINE_integer('num_workers', 1, 'Machines sharing the sweep: this one runs every num_workers-th point '
                     '(of --points, if given) from --worker_index, and writes no table.')
flags.DEFINE_integer('worker_index', 0, 'This machine\'s place among --num_workers, from 0.')
flags.DEFINE_list('merge_from', None, 'Merge mode, no search: copy the points finished in these sweep directories '
                  'into --out_dir and write the table and figure of the whole sweep (an empty value: --out_dir '
                  'alone, shared by the machines).')
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
    latency_errors = [errors.parse(text) for text in FLAGS.latency_errors]  # predictor:NAME as --lpm takes it
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    plan = dict(lambdas=lambdas, etas=etas, latency_errors=latency_errors,
                error_lambdas=error_lambdas if latency_errors else (), seeds=seeds, eta_seeds=eta_seeds)
    if FLAGS.merge_from is not None:
        df = sweep.merge(search_tool.config_from_flags(), FLAGS.out_dir, FLAGS.merge_from, log=logging.info,
                         retime_rounds=FLAGS.retime_rounds, finished_only=FLAGS.finished_only, **plan)
    else:
        df = sweep.run(search_tool.config_from_flags(), FLAGS.out_dir, log=logging.info,
                       checkpoint_every=FLAGS.checkpoint_every, progress=FLAGS.progress,
                       measure_latency=FLAGS.measure_latency, retime_rounds=FLAGS.retime_rounds,
                       finished_only=FLAGS.finished_only, points=FLAGS.points, worker_index=FLAGS.worker_index,
                       num_workers=FLAGS.num_workers, **plan)
    if df.attrs.get('share'):
        print(f'this share of the sweep is done: {", ".join(df["run"]) if not df.empty else "no point"}; the '
              'table and figure of the whole sweep: the same command with --merge_from')
        return
    columns = ['run', 'supernet_valid_accuracy', 'predicted_vs_reference', 'measured_vs_reference', 'macs']
    columns = [c for c in columns if c in df]  # a sweep finished before the ratios were recorded lacks them
    print(df[columns].to_string(index=False, float_format=lambda v: f'{v:.2f}'))
    for what, devices in sweep.devices(df).items():  # the ratios' devices; their milliseconds are in the table
        print(f"{what} (x DARTS_V2) on: {'; '.join(devices) or '-'}")
    print(f'table {os.path.join(FLAGS.out_dir, sweep.TABLE)}, figure {os.path.join(FLAGS.out_dir, sweep.FIGURE)}')


if __name__ == '__main__':
    cli.run(main)
