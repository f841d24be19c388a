"""A new device's latency predictor from a base LPM and a few timings of that device.

    python -m tools.adapt_lpm --base=cpu_tflite_cifar --tables=runs/my_board.csv --name=my_board
    python -m tools.adapt_lpm --base=cpu_tflite_cifar --tables=t.csv --model_dir=runs/lpm_board \
        --method=affine_log

--base is a predictor name (python -m tools.lpms lists them) or an LPM directory; --tables the new
device's latency table(s) (tools.profile_latency --calibration=N chooses which architectures to time).
--method=auto (default) cross-validates the methods on the rows and keeps the best (see
ladnas_tf/lpm/adapt.py). Writes an ordinary LPM directory (LPM.load, --lpm of tools.search) with
metrics.json holding the cross-validated scores; --name writes it to the user folder of named
predictors (with --model_dir: there, and a copy under the name). Nothing is replaced on error.
"""
import json
import math
import os
import shutil

from absl import flags

from ladnas_tf.bad_input import BadInput
from . import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('base', 'cpu_tflite_cifar', 'Base LPM: a predictor name or an LPM directory.')
flags.DEFINE_list('tables', None, "The new device's latency table(s) (CSV) of the base's setting.")
flags.DEFINE_string('model_dir', None, 'Output LPM directory.')
flags.DEFINE_string('name', None, 'Register the result under this name (user folder, see tools.lpms).')
flags.DEFINE_enum('method', 'auto', ['auto', 'scale', 'affine_log', 'finetune_last', 'finetune_all', 'scratch'],
                  'Adaptation method; auto: the lowest cross-validated error on the rows.')
flags.DEFINE_integer('seed', 0, 'Seed of the CV folds and of the trained methods.')
flags.DEFINE_bool('overwrite', False, 'Replace an existing output directory (or name).')


def check_output_dir(path, overwrite):
    """Refuses to write over a directory that holds something, unless asked to."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f'{path} exists and is not a directory')
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise FileExistsError(f'{path} already exists and is not empty (pass --overwrite to replace it)')


def _finite(value):
    """JSON has no NaN: an undefined score (e.g. tau of constant predictions) is written as null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return None if isinstance(value, float) and not math.isfinite(value) else value


def outputs():
    """The directories to write, checked before any work: --model_dir and/or the named one."""
    from ladnas_tf.lpm import registry
    if not FLAGS.model_dir and not FLAGS.name:
        raise BadInput('give --model_dir, --name or both')
    paths = [p for p in (FLAGS.model_dir, FLAGS.name and registry.user_dir(FLAGS.name)) if p]
    for path in paths:
        check_output_dir(path, FLAGS.overwrite)
    return paths


def install(staging, path):
    """Moves (or copies) a finished staging directory into place, replacing what was there."""
    final = path.rstrip('/') + '.partial'
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(staging, final)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(final, path)


def write(model, report, staging):
    model.save(staging)
    best = report['cv'].get(report['method'], {})
    result = {'scored_by': 'cross-validation' if best else None, 'method': report['method'],
              'rows': report['rows'], **best, 'cv': report['cv']}
    with open(os.path.join(staging, 'metrics.json'), 'w') as f:
        json.dump(_finite(result), f, indent=2)


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments: {" ".join(argv[1:])}')
    if not FLAGS.tables:
        raise BadInput('--tables is required (the new device\'s latency table)')
    from ladnas_tf.lpm import adapt, dataset, registry
    from ladnas_tf.profiling import table
    paths = outputs()
    base = registry.load(FLAGS.base)
    base_dir = base.path
    df = dataset.load_tables(FLAGS.tables)
    model, report = adapt.adapt(base, df, FLAGS.method, seed=FLAGS.seed)
    model.metadata = adapt.describe(model, base.metadata, df, report, registry.name_of(base_dir),
                                    table.portable(base_dir), [table.portable(t) for t in FLAGS.tables])
    staging = os.path.abspath(paths[0]).rstrip('/') + '.staging'
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(model, report, staging)
        for path in paths:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            install(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for method, s in report['cv'].items():
        print(f'  CV {method:14s} log-MRE {s["log_mre_pct"]:6.2f}%  MRE {s["mre_pct"]:6.2f}%  '
              f'Kendall tau {s["kendall_tau"]:.3f}')
    print(f'method {report["method"]} on {report["rows"]} rows ({report["label"]["kind"]} label) -> '
          f'{", ".join(paths)}')


if __name__ == '__main__':
    cli.run(main)
