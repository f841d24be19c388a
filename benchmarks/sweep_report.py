"""A finished lambda sweep against its FLOPs-aware baseline at equal MACs, seed by seed.

    python -m benchmarks.sweep_report --sweep_dir=runs/sweep_int8 --out=docs/search_sweep_int8 \
        --sweep_command='python -m tools.sweep --flagfile=configs/sweep_int8_cifar10.cfg ...'

For each seed, the FLOPs-aware runs of that seed (eta > 0, and the plain search as eta = 0 when the sweep
has one) are interpolated linearly in MACs; every latency-aware run is set against that line at its own
MACs: its measured latency (re-timed in alternation when the sweep re-timed, see sweep.retime) and
its supernet accuracy (the bar: no latency-aware run more than 1 point below its baseline). A run
whose MACs lie outside its seed's FLOPs-aware range has no equal-MACs baseline (NaN), rather than an
extrapolated one. Writes <out>.csv (one row per run), <out>.png and <out>.json
(the figures, a markdown table, the sweep's command, and this run's provenance).
"""
import argparse
import os

import numpy as np
import pandas as pd

from benchmarks import save_json
from ladnas_tf import sweep


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sweep_dir', required=True, help='A finished tools.sweep output directory.')
    p.add_argument('--out', required=True, help='Output path without extension.')
    p.add_argument('--sweep_command', default='', help='The command that ran the sweep (recorded as given).')
    return p.parse_args(argv)


def compare(df):
    """One row per run: latency (ms and x DARTS_V2 timed beside it), MACs, accuracy; for latency-aware
    runs also the seed's FLOPs-aware latency and accuracy at the same MACs and the ratio / difference."""
    column = sweep.latency_column(df)
    reference = 'retimed_ref_ms' if column == 'retimed_ms' else 'reference_ms'
    rows = []
    for seed, runs in df.groupby('seed'):
        at_macs = lambda macs, col: float(sweep.flops_aware_ms(runs, np.array([macs], float), col)[0])
        for _, r in runs.iterrows():
            row = {'run': r['run'], 'seed': int(seed), 'lambda_': r['lambda_'], 'eta': r['eta'],
                   'macs_m': r['macs'] / 1e6, 'latency_ms': r[column], 'x_darts_v2': r[column] / r[reference],
                   'predicted_x_darts_v2': r.get('predicted_vs_reference', np.nan),
                   'supernet_accuracy': r['supernet_valid_accuracy'], 'genotype': r['genotype']}
            if r['eta'] == 0 and r['lambda_'] > 0:
                flops_ms = at_macs(r['macs'], column)
                flops_acc = at_macs(r['macs'], 'supernet_valid_accuracy')
                row.update(flops_aware_ms=flops_ms, vs_flops_aware=r[column] / flops_ms - 1,
                           accuracy_vs_flops_aware=r['supernet_valid_accuracy'] - flops_acc)
            rows.append(row)
    return pd.DataFrame(rows), column


def markdown(table):
    head = ('| run | seed | MACs M | latency ms | x DARTS_V2 | predicted x DARTS_V2 | supernet acc % '
            '| FLOPs-aware at equal MACs, ms | latency vs FLOPs-aware | acc vs FLOPs-aware, points |')
    lines = [head, '|' + '---|' * head.count(' | ') + '---|']
    fmt = lambda v, spec: '-' if pd.isna(v) else format(v, spec.rstrip('%')) + '%' * spec.endswith('%')
    for _, r in table.iterrows():
        lines.append(f"| {r['run']} | {r['seed']} | {r['macs_m']:.0f} | {r['latency_ms']:.2f} | "
                     f"{r['x_darts_v2']:.3f} | {fmt(r['predicted_x_darts_v2'], '.3f')} | "
                     f"{r['supernet_accuracy']:.2f} | "
                     f"{fmt(r.get('flops_aware_ms'), '.2f')} | {fmt(r.get('vs_flops_aware', np.nan) * 100, '+.1f%')} | "
                     f"{fmt(r.get('accuracy_vs_flops_aware'), '+.2f')} |")
    return '\n'.join(lines)


def plot(table, path):
    """Per seed: measured latency against MACs, the FLOPs-aware line and the latency-aware runs on it."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    seeds = sorted(table['seed'].unique())
    fig, axes = plt.subplots(1, len(seeds), figsize=(5.2 * len(seeds), 4.2), squeeze=False)
    for ax, seed in zip(axes[0], seeds):
        runs = table[table['seed'] == seed]
        family = runs[(runs['eta'] > 0) | (runs['lambda_'] == 0)].sort_values('macs_m')
        aware = runs[(runs['eta'] == 0) & (runs['lambda_'] > 0)]
        ax.plot(family['macs_m'], family['latency_ms'], 'x--', color='tab:orange', label='FLOPs-aware')
        ax.plot(aware['macs_m'], aware['latency_ms'], 'o', color='tab:blue', label='latency-aware')
        for _, r in runs.iterrows():
            ax.annotate(f"{r['run'].split('-seed')[0]} ({r['supernet_accuracy']:.1f}%)",
                        (r['macs_m'], r['latency_ms']), fontsize=7, xytext=(3, 3), textcoords='offset points')
        ax.set_title(f'seed {seed}')
        ax.set_xlabel('MACs of the derived network (M)')
        ax.set_ylabel('measured latency (ms, re-timed in alternation)')
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    df = pd.read_csv(os.path.join(args.sweep_dir, sweep.TABLE))
    table, column = compare(df)
    table.to_csv(args.out + '.csv', index=False)
    plot(table, args.out + '.png')
    aware = table[table['vs_flops_aware'].notna()] if 'vs_flops_aware' in table else table.iloc[:0]
    figures = {'sweep_command': args.sweep_command, 'latency_column': column,
               'runs': table.drop(columns='genotype').astype(object).where(table.notna(), None).to_dict('records'),
               'beats_flops_aware_on_every_seed': bool(len(aware) and (aware['vs_flops_aware'] < 0).all()
                                                       and set(aware['seed']) == set(table['seed'])),
               # the bar guards against buying latency with accuracy: no run more than 1 point below its baseline
               'accuracy_no_worse_than_1_point': bool(len(aware) and (aware['accuracy_vs_flops_aware'] >= -1).all()),
               'summary_markdown': markdown(table)}
    save_json(args.out + '.json', figures, {'sweep_dir': os.path.basename(os.path.normpath(args.sweep_dir))})
    print(figures['summary_markdown'])


if __name__ == '__main__':
    main()
