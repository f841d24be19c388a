"""The paper's Table 1: LPM test error against the number of training architectures.

    python -m tools.lpm_sweep --flagfile=configs/lpm_paper.cfg \
        --tables=data/cpu_tflite_cifar.csv --model_dir=runs/lpm_sweep --sizes=500,1000,2000,all

Every size is tested on the same split (per-arch_id, --split_seed) and smaller training sets are
subsets of larger ones. Sizes beyond what the table's training split holds are dropped, and 'all'
(the whole training split) is added in their place. Writes one model directory per size
(`n<size>/`, as tools.train_lpm does), sweep.csv and sweep.png to --model_dir. Takes the recipe
flags of tools.train_lpm (except --max_train_rows, which the sweep sets). The norm_* columns are
the errors against load-normalised test labels (tables with ref_ms; see ladnas_tf.lpm.training).
"""
import os
import shutil

import pandas as pd
from absl import flags, logging

from ladnas_tf.bad_input import BadInput
from ladnas_tf.lpm import dataset, model as lpm, training as lpm_run
from . import cli, train_lpm  # noqa: F401 (defines the flags the sweep shares with it)

flags.DEFINE_list('sizes', ['10000', '20000', '40000', '60000', '80000'],
                  "Training-set sizes (the paper's Table 1), or 'all'.")
FLAGS = flags.FLAGS
COLUMNS = ('train_rows', 'train_size', 'val_size', 'test_size', 'mae_ms', 'mre_pct', 'rmse_ms',
           'share_within_10pct', 'share_within_5pct', 'kendall_tau', 'spearman_rho', 'epochs_run', 'seconds',
           'norm_mre_pct', 'norm_share_within_10pct', 'norm_kendall_tau')


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


def sweep(df, recipe, out_dir, sizes, split_seed=0, test_fraction=0.2, overwrite=False, progress=True):
    train, _ = dataset.split(df, split_seed, test_fraction)
    sizes = resolve_sizes(sizes, len(train))
    if not sizes:
        raise BadInput('--sizes: no size to train')
    lpm_run.check_output_dir(out_dir, overwrite)
    shutil.rmtree(out_dir, ignore_errors=True)  # --overwrite: no stale sizes from an earlier sweep
    os.makedirs(out_dir)
    rows = []
    for n in sizes:
        logging.info('sweep: %d training rows', n)
        result = lpm_run.train_and_evaluate(df, recipe, os.path.join(out_dir, f'n{n}'), split_seed,
                                            test_fraction, n, overwrite=True, progress=progress)
        norm = result.get('vs_normalised', {})  # test labels with the load taken out, when the table has ref_ms
        rows.append({'train_rows': n, **{k: result[k] for k in COLUMNS if k in result and k != 'train_rows'},
                     **{f'norm_{k}': norm.get(k) for k in ('mre_pct', 'share_within_10pct', 'kendall_tau')}})
        table = pd.DataFrame(rows, columns=COLUMNS)
        # Written after each size, so a sweep stopped midway keeps what it measured.
        table.to_csv(os.path.join(out_dir, 'sweep.csv'), index=False)
    target = df.attrs.get('target_description', {}).get('target', '')
    plot_sweep(table, os.path.join(out_dir, 'sweep.png'),
               f'LPM error vs training size ({target}, test n={rows[0]["test_size"]})')
    return table


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments: {" ".join(argv[1:])}')
    if not FLAGS.tables or not FLAGS.model_dir:
        raise BadInput('--tables and --model_dir are required')
    if FLAGS.max_train_rows:
        raise BadInput('--max_train_rows is set by the sweep: use --sizes')
    lpm_run.check_output_dir(FLAGS.model_dir, FLAGS.overwrite)
    recipe = cli.config_from_flags(lpm.LPMRecipe)
    df = dataset.load_tables(FLAGS.tables)
    table = sweep(df, recipe, FLAGS.model_dir, FLAGS.sizes, FLAGS.split_seed, FLAGS.test_fraction,
                  FLAGS.overwrite, FLAGS.progress)
    print(table.to_string(index=False))


if __name__ == '__main__':
    cli.run(main)
