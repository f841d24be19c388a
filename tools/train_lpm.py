"""Trains a latency prediction module (LPM) on latency tables and evaluates it on a held-out split.

    python -m tools.train_lpm --flagfile=configs/lpm_paper.cfg \
        --tables=data/cpu_tflite_cifar.csv --model_dir=runs/lpm_paper

Writes to --model_dir: lpm.keras and metadata.json (LPM.load reads them), metrics.json (test-split
errors, sizes, seconds), scatter.png (predicted vs measured on the test split) and logs/ (TensorBoard).
The test split is decided per arch_id (--split_seed), so it is the same for every recipe and table size.

metrics.json compares predictions with the measured latency_ms of the test rows (whatever --label the
LPM trained on, so recipes stay comparable). When the table has ref_ms it adds two views that take the
machine's load out of the test labels: `vs_normalised` (test labels latency_ms / ref_ms * median(training
ref_ms)) and `quiet` (only the test rows whose ref_ms is within +-5% of that median), plus
`ref_noise_pct`: how far the reference network's own time strays from its median (mean |ref / median - 1|),
the error a perfect predictor of the typical latency would still show on raw labels.
"""
import dataclasses
import json
import math
import os
import shutil
import time

import numpy as np
from absl import flags, logging

from ladnas_tf.bad_input import BadInput
from ladnas_tf.latency import lpm, metrics, report
from . import cli

R = lpm.PAPER_RECIPE
flags.DEFINE_list('tables', None, 'Latency table CSV file(s) of one target and setting.')
flags.DEFINE_string('model_dir', None, 'Output directory of the trained LPM.')
flags.DEFINE_bool('overwrite', False, 'Replace an existing --model_dir.')
flags.DEFINE_integer('seed', R.seed, 'Seed of weight initialisation and shuffling.')
flags.DEFINE_integer('split_seed', 0, 'Seed of the per-arch_id train/test (and validation) split.')
flags.DEFINE_float('test_fraction', 0.2, 'Share of architectures held out for testing (paper: 20K of 100K).')
flags.DEFINE_integer('max_train_rows', 0, 'Train on at most this many training rows (0 = all; for sweeps).')
flags.DEFINE_enum('optimizer', R.optimizer, lpm.OPTIMIZERS, 'Optimizer.')
flags.DEFINE_float('lr', R.lr, 'Learning rate (fixed).')
flags.DEFINE_float('momentum', R.momentum, 'SGD momentum.')
flags.DEFINE_float('weight_decay', R.weight_decay, 'Coupled L2 weight decay (PyTorch convention).')
flags.DEFINE_integer('batch_size', R.batch_size, 'Batch size.')
flags.DEFINE_integer('epochs', R.epochs, 'Epochs (maximum, with early stopping).')
flags.DEFINE_enum('loss', R.loss, lpm.LOSSES, 'Loss on the (scaled) target.')
flags.DEFINE_enum('target_scaling', R.target_scaling, lpm.TARGET_SCALINGS,
                  'none: raw ms (paper); standard: (ms - mean) / std; log: standardised log(ms).')
flags.DEFINE_integer('patience', R.patience, 'Early-stopping patience in epochs (0 = off).')
flags.DEFINE_float('val_fraction', R.val_fraction, 'Share of training rows held out for early stopping.')
flags.DEFINE_enum('encode_cells', R.cells, tuple(lpm.CELLS), 'normal: 112 bits (paper); both: 224 bits.')
flags.DEFINE_integer('ensemble', R.ensemble, 'Independently initialised members averaged in ms.')
flags.DEFINE_enum('label', R.label, lpm.LABELS, 'latency: measured latency_ms (paper); normalised: '
                  'latency_ms / ref_ms * median(training ref_ms), the load taken out; predictions stay in ms.')
flags.DEFINE_bool('progress', True, 'Show an epoch-level progress bar.')
FLAGS = flags.FLAGS


def recipe_from_flags():
    return lpm.Recipe(optimizer=FLAGS.optimizer, lr=FLAGS.lr, momentum=FLAGS.momentum,
                      weight_decay=FLAGS.weight_decay, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs,
                      loss=FLAGS.loss, target_scaling=FLAGS.target_scaling, patience=FLAGS.patience,
                      val_fraction=FLAGS.val_fraction, cells=FLAGS.encode_cells, ensemble=FLAGS.ensemble,
                      label=FLAGS.label, seed=FLAGS.seed)


def check_output_dir(path, overwrite):
    """Refuses to write over a directory that holds something, unless asked to."""
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise FileExistsError(f'{path} already exists and is not empty (pass --overwrite to replace it)')
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f'{path} exists and is not a directory')


def split_rows(df, split_seed, test_fraction, max_train_rows, val_fraction):
    """(fit, validation or None, test) rows: the test split never depends on the training size."""
    train, test = lpm.split(df, split_seed, test_fraction)
    train = lpm.first_rows(train, max_train_rows, split_seed)
    if not val_fraction:
        return train, None, test
    fit, val = lpm.holdout(train, split_seed, val_fraction)
    return fit, val, test


def plot_scatter(measured, predicted, path, title, normalised=None):
    """Predicted against measured latency of the test rows; `normalised` (the load-normalised labels)
    is drawn over the raw ones when given, so rows timed under load show as the grey points it moves."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    if normalised is None:
        ax.scatter(measured, predicted, s=4, alpha=0.5, label='test architectures')
    else:
        ax.scatter(measured, predicted, s=6, c='0.6', alpha=0.6, label='measured latency_ms')
        ax.scatter(normalised, predicted, s=6, alpha=0.7, label='load-normalised')
        measured = np.concatenate([measured, normalised])
    lo, hi = float(min(measured.min(), predicted.min())), float(max(measured.max(), predicted.max()))
    ax.plot([lo, hi], [lo, hi], 'k-', lw=1, label='y = x')
    for r in (0.9, 1.1):
        ax.plot([lo, hi], [lo * r, hi * r], 'k:', lw=1, label='±10%' if r > 1 else None)
    ax.set(xlabel='measured latency (ms)', ylabel='predicted latency (ms)')
    ax.set_title(title, fontsize=9)
    ax.legend(loc='upper left')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _json_safe(d):
    return {k: (_json_safe(v) if isinstance(v, dict) else None if isinstance(v, float) and not math.isfinite(v)
                else v) for k, v in d.items()}




def load_views(train, test, predicted):
    """Test metrics with the machine's load taken out (see the module docstring); {} without ref_ms."""
    if 'ref_ms' not in test.columns:
        return {}
    ref_median = lpm.reference_median(train)
    deviation = test['ref_ms'].to_numpy(float) / ref_median - 1
    quiet = np.abs(deviation) <= report.QUIET
    views = {'ref_median_ms': ref_median,
             'ref_noise_pct': float(100 * np.mean(np.abs(deviation))),
             'vs_normalised': metrics.regression_metrics(lpm.normalised_latency(test, ref_median), predicted)}
    if quiet.sum() >= 2:
        views['quiet'] = metrics.regression_metrics(test['latency_ms'].to_numpy()[quiet], predicted[quiet])
        views['quiet']['ref_noise_pct'] = float(100 * np.mean(np.abs(deviation[quiet])))
    return views


def train_and_evaluate(df, recipe, model_dir, split_seed=0, test_fraction=0.2, max_train_rows=0,
                       overwrite=False, progress=True):
    """Trains one LPM on df's training split and writes the full model directory; returns its metrics.

    Everything is written to `<model_dir>.partial` first and moved into place at the end, so a failed
    run never destroys an existing model.
    """
    check_output_dir(model_dir, overwrite)
    fit, val, test = split_rows(df, split_seed, test_fraction, max_train_rows, recipe.val_fraction)
    if len(test) == 0 or len(fit) == 0:
        raise lpm.LPMError(f'{len(df)} rows give {len(fit)} training and {len(test)} test rows: need both')
    staging = model_dir.rstrip('/') + '.partial'
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        result = _train_into(staging, fit, val, test, recipe, split_seed, test_fraction, progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a failed run leaves nothing behind
        raise
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    os.replace(staging, model_dir)
    return result


def _train_into(staging, fit, val, test, recipe, split_seed, test_fraction, progress):
    logging.info('training on %d rows (%d validation), testing on %d; recipe %s',
                 len(fit), 0 if val is None else len(val), len(test), recipe)
    model = lpm.LPM(recipe)
    start = time.time()
    model.train(fit, val, callbacks=[lpm.EpochSummaries(os.path.join(staging, 'logs'))], progress=progress)
    seconds = time.time() - start
    measured = test['latency_ms'].to_numpy()
    predicted = model.predict_ms(lpm.encodings(test, recipe.cells))
    result = {**metrics.regression_metrics(measured, predicted),
              'test_size': len(test), 'train_size': len(fit), 'val_size': 0 if val is None else len(val),
              'epochs_run': model.metadata['epochs_run'], 'seconds': round(seconds, 2),
              'target': model.metadata['target'], 'setting': model.metadata['setting'],
              'split_seed': split_seed, 'test_fraction': test_fraction,
              'test_sha256': lpm.data_hash(test), 'label': model.label,
              **load_views(fit, test, predicted), 'recipe': dataclasses.asdict(recipe)}
    model.save(staging)
    with open(os.path.join(staging, 'metrics.json'), 'w') as f:
        json.dump(_json_safe(result), f, indent=2)
    normalised = (lpm.normalised_latency(test, result['ref_median_ms']) if 'vs_normalised' in result
                  else None)
    title = f'{result["target"]}: test n={len(test)}, MRE {result["mre_pct"]:.2f}%'
    if normalised is not None:
        title += f' (normalised {result["vs_normalised"]["mre_pct"]:.2f}%)'
    plot_scatter(measured, predicted, os.path.join(staging, 'scatter.png'),
                 f'{title}\nKendall tau {result["kendall_tau"]:.3f}', normalised)
    return result


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments: {" ".join(argv[1:])}')
    if not FLAGS.tables or not FLAGS.model_dir:
        raise BadInput('--tables and --model_dir are required')
    check_output_dir(FLAGS.model_dir, FLAGS.overwrite)
    recipe = recipe_from_flags()
    df = lpm.load_tables(FLAGS.tables)
    result = train_and_evaluate(df, recipe, FLAGS.model_dir, FLAGS.split_seed, FLAGS.test_fraction,
                                FLAGS.max_train_rows, FLAGS.overwrite, FLAGS.progress)
    logging.info('test: MAE %.3f ms, MRE %.2f%%, within 10%% %.3f, tau %.3f (n=%d, %d training rows, %.0f s)',
                 result['mae_ms'], result['mre_pct'], result['share_within_10pct'], result['kendall_tau'],
                 result['test_size'], result['train_size'], result['seconds'])
    if 'vs_normalised' in result:
        n = result['vs_normalised']
        logging.info('test vs load-normalised labels: MRE %.2f%%, within 10%% %.3f, tau %.3f',
                     n['mre_pct'], n['share_within_10pct'], n['kendall_tau'])
    print(json.dumps(_json_safe({k: v for k, v in result.items() if k != 'recipe'})))


if __name__ == '__main__':
    cli.run(main)
