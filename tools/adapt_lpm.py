"""A new device's latency predictor from a base LPM and a few timings of that device.

    python -m tools.adapt_lpm --base=cpu_tflite_cifar --tables=runs/my_board.csv --name=my_board
    python -m tools.adapt_lpm --base=cpu_tflite_cifar --tables=t.csv --model_dir=runs/lpm_board \
        --method=affine_log

--base is a predictor name (python -m tools.lpms lists them) or an LPM directory; --tables the new
device's latency table(s) (tools.profile_latency --calibration=N chooses which architectures to time).
--method=auto (default) cross-validates the methods on the rows and keeps the one that ranks them best,
error breaking near-ties (see ladnas_tf/lpm/adapt.py); fewer than 5 rows are refused. A base of another
numeric format (float32 / int8) than the tables is refused unless --force_format. Writes an ordinary LPM
directory (LPM.load, --lpm of tools.search) with metrics.json holding the cross-validated scores; --name
writes it to the user folder of named predictors (with --model_dir: there, and a copy under the name).
Nothing is replaced on error; --overwrite replaces the LPM's own files and nothing else in the folder.
"""
from absl import flags

from ladnas_tf.bad_input import BadInput
from . import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('base', None, 'Base LPM: a predictor name or an LPM directory (default: the shipped base of '
                    'the tables\' numeric format: cpu_tflite_cifar for float32, cpu_tflite_int8_cifar for int8).')
flags.DEFINE_list('tables', None, "The new device's latency table(s) (CSV) of the base's setting.")
flags.DEFINE_string('model_dir', None, 'Output LPM directory.')
flags.DEFINE_string('name', None, 'Register the result under this name (user folder, see tools.lpms).')
flags.DEFINE_enum('method', 'auto',
                  ['auto', 'scale', 'affine_log', 'op_costs', 'affine_op_costs', 'finetune_last', 'finetune_all',
                   'scratch'],
                  'Adaptation method; auto: the best cross-validated ranking of the rows, error breaking ties.')
flags.DEFINE_integer('seed', 0, 'Seed of the CV folds and of the trained methods.')
flags.DEFINE_bool('overwrite', False, 'Replace the LPM outputs in an existing output directory (or name); '
                  'nothing else in it.')
flags.DEFINE_bool('force_format', False, 'Adapt a base of another numeric format (float32 / int8) than the tables.')


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments: {" ".join(argv[1:])}')
    if not FLAGS.tables:
        raise BadInput('--tables is required (the new device\'s latency table)')
    if not FLAGS.model_dir and not FLAGS.name:
        raise BadInput('give --model_dir, --name or both')
    from ladnas_tf.lpm import adapt, registry
    paths = [p for p in (FLAGS.model_dir, FLAGS.name and registry.user_dir(FLAGS.name)) if p]
    _, report = adapt.adapt_and_save(FLAGS.base, FLAGS.tables, paths, FLAGS.method, FLAGS.seed, FLAGS.overwrite,
                                     FLAGS.force_format)
    for method, s in report['cv'].items():
        print(f'  CV {method:14s} log-MRE {s["log_mre_pct"]:6.2f}%  MRE {s["mre_pct"]:6.2f}%  '
              f'Kendall tau {s["kendall_tau"]:.3f}')
    print(f'method {report["method"]} on {report["rows"]} rows ({report["label"]["kind"]} label) -> '
          f'{", ".join(paths)}')


if __name__ == '__main__':
    cli.run(main)
