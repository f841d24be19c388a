"""Trains a latency prediction module (LPM) on latency tables and evaluates it on a held-out split.

    python -m tools.train_lpm --flagfile=configs/lpm_paper.cfg \
        --tables=data/cpu_tflite_cifar.csv --model_dir=runs/lpm_paper

Writes --model_dir as ladnas_tf.lpm.training describes: the model, metrics.json, scatter.png, logs/.
The test split is decided per arch_id (--split_seed), so it is the same for every recipe and table size.
"""
import json

from absl import flags, logging

from ladnas_tf.bad_input import BadInput
from ladnas_tf.lpm import dataset, model as lpm, training
from . import cli

flags.DEFINE_list('tables', None, 'Latency table CSV file(s) of one target and setting.')
flags.DEFINE_string('model_dir', None, 'Output directory of the trained LPM.')
flags.DEFINE_bool('overwrite', False, "Replace the LPM outputs in an existing --model_dir (nothing else in it).")
flags.DEFINE_bool('force_format', False, 'Replace a predictor of another numeric format (float32 / int8) than '
                  'the tables.')
flags.DEFINE_integer('split_seed', 0, 'Seed of the per-arch_id train/test (and validation) split.')
flags.DEFINE_float('test_fraction', 0.2, 'Share of architectures held out for testing (paper: 20K of 100K).')
flags.DEFINE_integer('max_train_rows', 0, 'Train on at most this many training rows (0 = all; for sweeps).')
cli.define_flags(lpm.LPMRecipe)  # the recipe: LPMRecipe's fields, defaults (the paper's) and help
flags.DEFINE_bool('progress', True, 'Show an epoch-level progress bar.')
FLAGS = flags.FLAGS


def inputs(argv):
    """(recipe, table rows) of the flags, --model_dir checked before the tables are read (tools.lpm_sweep's
    too)."""
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments: {" ".join(argv[1:])}')
    if not FLAGS.tables or not FLAGS.model_dir:
        raise BadInput('--tables and --model_dir are required')
    training.check_output_dir(FLAGS.model_dir, FLAGS.overwrite)
    return cli.config_from_flags(lpm.LPMRecipe), dataset.load_tables(FLAGS.tables)


def main(argv):
    recipe, df = inputs(argv)
    result = training.train_and_evaluate(df, recipe, FLAGS.model_dir, FLAGS.split_seed, FLAGS.test_fraction,
                                        FLAGS.max_train_rows, FLAGS.overwrite, FLAGS.progress, FLAGS.force_format)
    logging.info('test: MAE %.3f ms, MRE %.2f%%, within 10%% %.3f, tau %.3f (n=%d, %d training rows, %.0f s)',
                 result['mae_ms'], result['mre_pct'], result['share_within_10pct'], result['kendall_tau'],
                 result['test_size'], result['train_size'], result['seconds'])
    if 'vs_normalised' in result:
        n = result['vs_normalised']
        logging.info('test vs load-normalised labels: MRE %.2f%%, within 10%% %.3f, tau %.3f',
                     n['mre_pct'], n['share_within_10pct'], n['kendall_tau'])
    print(json.dumps(training.json_safe({k: v for k, v in result.items() if k != 'recipe'})))


if __name__ == '__main__':
    cli.run(main)
