"""The few-shot curve: the shipped LPM adapted to another device from N timings, against from scratch.

    taskset -c 0 python -m benchmarks.fewshot_curve --out=docs/fewshot_lpm

For each table, N and draw: a random permutation of the table's rows (seed = draw), its first N rows
adapt (nested as N grows, as a user adds timings), the rest score. Every method of lpm/adapt.py,
`auto` (cross-validated on the N rows, scored as the method it picks) and the unadapted base, scored on
the held-out rows against the measured latency_ms (raw) and against latency_ms / ref_ms x the median
ref_ms of the N rows (normalised: the machine's load taken out). Writes <out>.csv (one line per table,
N, draw and method) and <out>.png, and prints the summary table in markdown.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES = ('data/cpu_tflite_cifar_f26.csv', 'data/cpu_tflite_int8_cifar_f26.csv', 'data/cpu_tflite_int8_cifar.csv')
NS = (5, 10, 20, 50, 100)
SCORES = ('kendall_tau', 'mre_pct', 'share_within_10pct')


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--base', default='cpu_tflite_cifar', help='Base LPM (name or directory).')
    p.add_argument('--tables', default=','.join(TABLES), help='Comma-separated new-device tables.')
    p.add_argument('--ns', default=','.join(map(str, NS)), help='Adaptation sizes.')
    p.add_argument('--draws', type=int, default=5, help='Random draws per table and N.')
    p.add_argument('--methods', default=None,
                   help='Comma-separated methods of lpm/adapt.py to fit, and `auto` to choose among (default: all).')
    p.add_argument('--min_test', type=int, default=10, help='Fewest test rows an N must leave (and 20%%).')
    p.add_argument('--out', default='docs/fewshot_lpm', help='Output path without extension.')
    p.add_argument('--plot_only', action='store_true', help='Redraw the figure and table from <out>.csv.')
    return p.parse_args()


def allowed(ns, rows, min_test):
    """The Ns that leave at least max(min_test, 20% of the table) rows to score on."""
    return [n for n in ns if rows - n >= max(min_test, math.ceil(0.2 * rows))]


def scores(measured, predicted, prefix):
    from ladnas_tf.lpm import metrics
    m = metrics.regression_metrics(measured, predicted)
    return {f'{prefix}_{k}': m[k] for k in SCORES}


def evaluate(base, df, n, draw, methods):
    """Rows of the CSV for one table, N and draw."""
    from ladnas_tf.lpm import adapt, dataset
    order = np.random.default_rng(draw).permutation(len(df))
    rows, test = df.iloc[order[:n]], df.iloc[order[n:]]
    label, y = adapt.new_label(base, rows)
    x, x_test = dataset.encodings(rows, base.cells), dataset.encodings(test, base.cells)
    raw = test['latency_ms'].to_numpy(float)
    normalised = (dataset.normalised_latency(test, label['ref_median_ms']) if label['kind'] == 'normalised' else raw)
    out, predicted = [], {'base': base.predict_ms(x_test)}
    seconds = {'base': 0.0}
    for method in methods:
        if n < adapt.MIN_ROWS[method]:
            continue
        tic = time.time()
        predicted[method] = adapt.fit(method, base, x, y, label, seed=draw).predict_ms(x_test)
        seconds[method] = time.time() - tic
    tic = time.time()
    chosen, _ = adapt.choose(base, x, y, label, methods, seed=draw)
    predicted['auto'], seconds['auto'] = predicted[chosen], time.time() - tic + seconds[chosen]
    for method, p in predicted.items():
        out.append({'n': n, 'draw': draw, 'method': method, 'chosen': chosen if method == 'auto' else method,
                    'test_rows': len(test), 'seconds': round(seconds[method], 3),
                    **scores(raw, p, 'raw'), **scores(normalised, p, 'norm')})
    return out


def run(args):
    from ladnas_tf.lpm import adapt, dataset, registry
    base = registry.load(args.base)
    ns, results = [int(n) for n in args.ns.split(',')], []
    methods = tuple(args.methods.split(',')) if args.methods else adapt.METHODS
    for path in args.tables.split(','):
        df = dataset.load_tables([path])
        for n in allowed(ns, len(df), args.min_test):
            for draw in range(args.draws):
                tic = time.time()
                for row in evaluate(base, df, n, draw, methods):
                    results.append({'table': os.path.basename(path), **row})
                print(f'{path} N={n} draw {draw}: {time.time() - tic:.1f} s', flush=True)
        pd.DataFrame(results).to_csv(args.out + '.csv', index=False, float_format='%.5g')
    return pd.DataFrame(results)


ORDER = ('base', 'scale', 'affine_log', 'op_costs', 'affine_op_costs', 'finetune_last', 'finetune_all', 'auto',
         'scratch')


def plot(df, path):
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    tables = list(dict.fromkeys(df['table']))
    panels = (('norm_kendall_tau', 'Kendall tau (normalised)', 0.85),
              ('norm_share_within_10pct', 'share within ±10% (normalised)', 0.90))
    fig, axes = plt.subplots(len(tables), 2, figsize=(10, 3.3 * len(tables)), squeeze=False)
    for r, table in enumerate(tables):
        sub = df[df['table'] == table]
        for c, (column, title, goal) in enumerate(panels):
            ax = axes[r][c]
            for method in ORDER:
                g = sub[sub['method'] == method].groupby('n')[column]
                if not len(g):
                    continue
                mean, std = g.mean(), g.std().fillna(0)
                line, = ax.plot(mean.index, mean.values, marker='o', ms=3, label=method,
                                ls='--' if method in ('base', 'scratch') else '-')
                ax.fill_between(mean.index, mean - std, mean + std, color=line.get_color(), alpha=0.12)
            ax.axhline(goal, color='k', lw=0.8, ls=':')
            ax.set_xscale('log')
            ax.minorticks_off()  # only the Ns measured are labelled
            ax.set_xticks(sorted(sub['n'].unique()), [str(n) for n in sorted(sub['n'].unique())])
            ax.set(xlabel='adaptation rows N', ylabel=title, title=table)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(df):
    """Markdown: per table, N and method, mean ± std over draws of the normalised and raw scores."""
    lines = ['| table | N | method | tau norm | MRE norm % | within 10% norm | tau raw | MRE raw % | '
             'within 10% raw | auto picked |', '|' + '---|' * 10]
    for (table, n), sub in df.groupby(['table', 'n'], sort=False):
        for method in ORDER:
            m = sub[sub['method'] == method]
            if m.empty:
                continue
            def cell(column):
                k = 100 if 'share' in column else 1  # shares in %
                std = k * m[column].std()
                return f'{k * m[column].mean():.3g} ± {std if abs(std) > 1e-9 else 0:.2g}'  # no 1e-14 noise
            picked = ', '.join(f'{p} {c}' for p, c in m['chosen'].value_counts().items()) if method == 'auto' else ''
            lines.append(f'| {table} | {n} | {method} | {cell("norm_kendall_tau")} | {cell("norm_mre_pct")} | '
                         f'{cell("norm_share_within_10pct")} | {cell("raw_kendall_tau")} | {cell("raw_mre_pct")} | '
                         f'{cell("raw_share_within_10pct")} | {picked} |')
    return '\n'.join(lines)


def main():
    args = parse_args()
    os.chdir(REPO)
    tic = time.time()
    df = pd.read_csv(args.out + '.csv') if args.plot_only else run(args)
    plot(df, args.out + '.png')
    print(summary(df))
    print(f'{time.time() - tic:.0f} s')
    if not args.plot_only:  # what made the csv: command, commit, date, machine, and the summary table
        from benchmarks import write_json
        write_json(args.out + '.json', {'csv': args.out + '.csv', 'figure': args.out + '.png',
                                        'base': args.base, 'seconds': round(time.time() - tic),
                                        'summary_markdown': summary(df)})
    elif os.path.exists(args.out + '.json'):  # the table redrawn from the same csv: its provenance stands
        with open(args.out + '.json') as f:
            record = json.load(f)
        with open(args.out + '.json', 'w') as f:
            json.dump({**record, 'summary_markdown': summary(df)}, f, indent=2)


if __name__ == '__main__':
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    main()
