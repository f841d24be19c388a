"""One LPM training run: a table split per architecture, an LPM trained on one side, scored on the other,
and the run directory written (what tools.train_lpm and tools.lpm_sweep produce).

The directory holds lpm.keras and metadata.json (LPM.load reads them), metrics.json (test-split errors,
sizes, seconds), scatter.png (predicted vs measured on the test split) and logs/ (TensorBoard): OUTPUTS.
It is written beside model_dir and swapped in at the end (run_dir.staged_outputs), so a failed run never
destroys a model, and --overwrite replaces those outputs only: other files and runs in model_dir stay.
A predictor is never replaced by one of another numeric format (float32 / int8) unless forced
(check_same_format). `size_sweep` is the paper's Table 1: one such run per training-set size.

metrics.json compares predictions with the measured latency_ms of the test rows (whatever label the LPM
trained on, so recipes stay comparable). When the table has ref_ms it adds two views that take the
machine's load out of the test labels: `vs_normalised` (test labels latency_ms / ref_ms * median(training
ref_ms)) and `quiet` (only the test rows whose ref_ms is within +-5% of that median), plus
`ref_noise_pct`: how far the reference network's own time strays from its median (mean |ref / median - 1|),
the error a perfect predictor of the typical latency would still show on raw labels.
"""
import dataclasses
import math
import os
import re
import time

import keras
import numpy as np
import pandas as pd
from absl import logging

from ladnas_tf import run_dir
from ladnas_tf.bad_input import BadInput
from ladnas_tf.lpm import dataset, metrics, model as lpm
from ladnas_tf.profiling import report
from ladnas_tf.profiling.targets.base import numeric_format

SCATTER_FILE, LOGS_DIR = 'scatter.png', 'logs'
# What an LPM run writes into its directory: what --overwrite replaces, and nothing else.
OUTPUTS = (lpm.MODEL_FILE, lpm.METADATA_FILE, lpm.METRICS_FILE, SCATTER_FILE, LOGS_DIR)


class EpochSummaries(keras.callbacks.Callback):
    """TensorBoard scalars per epoch (logs/train, logs/validation, as Keras lays them out); a split's
    writer is made when it first has a value, so a run without validation has no validation log."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self.writers = {}

    def on_epoch_end(self, epoch, logs=None):
        by_split = {}
        for key, value in (logs or {}).items():
            split, name = ('validation', key[4:]) if key.startswith('val_') else ('train', key)
            by_split.setdefault(split, {})[f'epoch_{name}'] = value
        for split, values in by_split.items():
            if split not in self.writers:
                self.writers[split] = run_dir.summary_writer(self.log_dir, split)
            run_dir.write_scalars(self.writers[split], epoch, values)

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()


def check_output_dir(path, overwrite):
    """Refuses to write over a directory that holds something, unless asked to. An LPM run never resumes
    (it is minutes long and its OUTPUTS are replaced whole), hence not run_dir.prepare's resume-or-refuse."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise run_dir.RunDirError(f'{path} exists and is not a directory')
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise run_dir.RunDirError(f'{path} already exists and is not empty (pass --overwrite to replace the LPM '
                                  'files in it; nothing else is removed)')


class FormatError(lpm.LPMError):
    """A float32 predictor meeting int8 rows (or the reverse) where that would change its meaning."""


def staged(model_dir):
    """run_dir.staged_outputs for an LPM directory: its OUTPUTS replaced, metadata.json last."""
    return run_dir.staged_outputs(model_dir, OUTPUTS, last=lpm.METADATA_FILE)


def format_of(df):
    """The numeric format (float32 / int8) of a table's rows, from its description."""
    return numeric_format(df.attrs.get('target_description') or {'target': str(df['target'].iloc[0])})


def predictor_format(meta):
    """The numeric format of a predictor, from its metadata (the description of the table it learnt)."""
    description = meta.get('target_description')
    return numeric_format(description if isinstance(description, dict) else {'target': meta.get('target')})


def check_same_format(model_dir, df, force=False):
    """Refuses to replace the predictor in model_dir by one trained on rows of another numeric format:
    int8 and float32 rank architectures differently, so a search reading it would silently change meaning.
    An unreadable or absent predictor is not compared (check_output_dir decides over it)."""
    meta = run_dir.read_json_or_none(os.path.join(model_dir, lpm.METADATA_FILE))
    if force or not isinstance(meta, dict):
        return
    have = predictor_format(meta)
    if have != format_of(df):
        raise FormatError(f'{model_dir} holds a {have} predictor and the table is {format_of(df)}: use another '
                          '--model_dir (or pass --force_format to replace it)')


def test_views(train, test, predicted):
    """Test metrics with the machine's load taken out (see the module docstring); {} without ref_ms."""
    if 'ref_ms' not in test.columns:
        return {}
    ref_median = dataset.reference_median(train)
    deviation = test['ref_ms'].to_numpy(float) / ref_median - 1
    quiet = np.abs(deviation) <= report.QUIET
    views = {'ref_median_ms': ref_median,
             'ref_noise_pct': float(100 * np.mean(np.abs(deviation))),
             'vs_normalised': metrics.regression_metrics(dataset.normalised_latency(test, ref_median), predicted)}
    if quiet.sum() >= 2:
        views['quiet'] = metrics.regression_metrics(test['latency_ms'].to_numpy()[quiet], predicted[quiet])
        views['quiet']['ref_noise_pct'] = float(100 * np.mean(np.abs(deviation[quiet])))
    return views


def score(model, fit, test):
    """(errors against the measured latency, load views) of the test rows, as metrics.json has them."""
    predicted = model.predict_ms(dataset.encodings(test, model.cells))
    return metrics.regression_metrics(test['latency_ms'].to_numpy(), predicted), test_views(fit, test, predicted)


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


def json_safe(d):
    """d with non-finite floats as None (JSON has no NaN), nested dicts included."""
    return {k: (json_safe(v) if isinstance(v, dict) else None if isinstance(v, float) and not math.isfinite(v)
                else v) for k, v in d.items()}


def train_and_evaluate(df, recipe, model_dir, split_seed=0, test_fraction=0.2, max_train_rows=0,
                       overwrite=False, progress=True, force_format=False):
    """Trains one LPM on df's training split and writes the whole run directory; returns its metrics."""
    check_output_dir(model_dir, overwrite)
    check_same_format(model_dir, df, force_format)
    fit, val, test = dataset.split_rows(df, split_seed, test_fraction, max_train_rows, recipe.val_fraction)
    if len(test) == 0 or len(fit) == 0:
        raise lpm.LPMError(f'{len(df)} rows give {len(fit)} training and {len(test)} test rows: need both')
    with staged(model_dir) as staging:  # a failed run leaves nothing behind
        return _train_into(staging, fit, val, test, recipe, split_seed, test_fraction, progress)


def _train_into(staging, fit, val, test, recipe, split_seed, test_fraction, progress):
    logging.info('training on %d rows (%d validation), testing on %d; recipe %s',
                 len(fit), 0 if val is None else len(val), len(test), recipe)
    model = lpm.LPM(recipe)
    start = time.time()
    model.train(fit, val, callbacks=[EpochSummaries(os.path.join(staging, LOGS_DIR))], progress=progress)
    seconds = time.time() - start
    measured, views = score(model, fit, test)
    result = {**measured,
              'test_size': len(test), 'train_size': len(fit), 'val_size': 0 if val is None else len(val),
              'epochs_run': model.metadata['epochs_run'], 'seconds': round(seconds, 2),
              'target': model.metadata['target'], 'setting': model.metadata['setting'],
              'split_seed': split_seed, 'test_fraction': test_fraction,
              'test_sha256': dataset.data_hash(test), 'label': model.label,
              **views, 'recipe': dataclasses.asdict(recipe)}
    model.save(staging)
    run_dir.write_json(os.path.join(staging, lpm.METRICS_FILE), json_safe(result))
    _plot_result(model, test, result, os.path.join(staging, SCATTER_FILE))
    return result


def _plot_result(model, test, result, path):
    measured = test['latency_ms'].to_numpy()
    predicted = model.predict_ms(dataset.encodings(test, model.cells))
    normalised = (dataset.normalised_latency(test, result['ref_median_ms']) if 'vs_normalised' in result
                  else None)
    title = f'{result["target"]}: test n={len(test)}, MRE {result["mre_pct"]:.2f}%'
    if normalised is not None:
        title += f' (normalised {result["vs_normalised"]["mre_pct"]:.2f}%)'
    plot_scatter(measured, predicted, path, f'{title}\nKendall tau {result["kendall_tau"]:.3f}', normalised)


# ---- the paper's Table 1: test error against the training-set size ----

SWEEP_FILE, SWEEP_FIGURE = 'sweep.csv', 'sweep.png'
SWEEP_COLUMNS = ('train_rows', 'train_size', 'val_size', 'test_size', 'mae_ms', 'mre_pct', 'rmse_ms',
                 'share_within_10pct', 'share_within_5pct', 'kendall_tau', 'spearman_rho', 'epochs_run', 'seconds',
                 'norm_mre_pct', 'norm_share_within_10pct', 'norm_kendall_tau')


SIZE_DIR = re.compile(r'n[0-9]+')


def size_dir(n):
    return f'n{n}'


def sweep_runs(out_dir):
    """The LPM runs a sweep wrote in out_dir: `n<size>/` folders holding an LPM's metadata.json."""
    if not os.path.isdir(out_dir):
        return []
    return [os.path.join(out_dir, e) for e in sorted(os.listdir(out_dir))
            if SIZE_DIR.fullmatch(e) and os.path.isfile(os.path.join(out_dir, e, lpm.METADATA_FILE))]


def remove_sweep_outputs(out_dir, runs):
    """What a sweep wrote (sweep.csv, sweep.png, the OUTPUTS of its runs), nothing else; a run folder is
    removed only when that leaves it empty."""
    if os.path.isdir(out_dir):
        run_dir.remove_outputs(out_dir, (SWEEP_FILE, SWEEP_FIGURE))
    for path in runs:
        run_dir.remove_outputs(path, OUTPUTS)
        if not os.listdir(path):
            os.rmdir(path)


def resolve_sizes(sizes, available):
    """Sorted distinct sizes <= available; 'all' (or any size dropped for being too large) -> available."""
    out = set()
    for s in sizes:
        s = str(s).strip().lower()
        if s == 'all':
            out.add(available)
            continue
        try:
            n = int(s)
        except ValueError:
            raise BadInput(f"--sizes: {s!r} is neither a number nor 'all'") from None
        if n <= 0:
            raise BadInput(f'--sizes: {n} is not a positive size')
        out.add(min(n, available))
    return sorted(out)


def plot_sweep(table, path, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.ticker
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(table['train_rows'], table['mre_pct'], 'o-', label='relative error (%)')
    if table['norm_mre_pct'].notna().any():
        ax.plot(table['train_rows'], table['norm_mre_pct'], 'o-', color='tab:green',
                label='relative error vs load-normalised labels (%)')
    ax.set(xlabel='training architectures', ylabel='mean relative error (%)', title=title)
    ax.set_xscale('log')
    ax.set_xticks(table['train_rows'], [str(n) for n in table['train_rows']])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(table['train_rows'], table['mae_ms'], 's--', color='tab:orange', label='absolute error (ms)')
    ax2.set_ylabel('mean absolute error (ms)')
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [l.get_label() for l in lines], loc='upper right')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def size_sweep(df, recipe, out_dir, sizes, split_seed=0, test_fraction=0.2, overwrite=False, progress=True,
               force_format=False):
    """One run directory per training-set size (`n<size>/`, as train_and_evaluate writes it), all tested on
    the same split, smaller training sets subsets of larger ones; sweep.csv (rewritten after each size, so
    a sweep stopped midway keeps what it measured) and sweep.png. Returns the table. The norm_* columns are
    the errors against load-normalised test labels (tables with ref_ms)."""
    train, _ = dataset.split(df, split_seed, test_fraction)
    sizes = resolve_sizes(sizes, len(train))
    if not sizes:
        raise BadInput('--sizes: no size to train')
    check_output_dir(out_dir, overwrite)
    earlier = sweep_runs(out_dir)
    for path in earlier:
        check_same_format(path, df, force_format)
    remove_sweep_outputs(out_dir, earlier)  # --overwrite: no stale sizes from an earlier sweep
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for n in sizes:
        logging.info('sweep: %d training rows', n)
        result = train_and_evaluate(df, recipe, os.path.join(out_dir, size_dir(n)), split_seed,
                                    test_fraction, n, overwrite=True, progress=progress)
        norm = result.get('vs_normalised', {})  # test labels with the load taken out, when the table has ref_ms
        rows.append({'train_rows': n, **{k: result[k] for k in SWEEP_COLUMNS if k in result and k != 'train_rows'},
                     **{f'norm_{k}': norm.get(k) for k in ('mre_pct', 'share_within_10pct', 'kendall_tau')}})
        table = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
        table.to_csv(os.path.join(out_dir, SWEEP_FILE), index=False)
    target = df.attrs.get('target_description', {}).get('target', '')
    plot_sweep(table, os.path.join(out_dir, SWEEP_FIGURE),
               f'LPM error vs training size ({target}, test n={rows[0]["test_size"]})')
    return table
