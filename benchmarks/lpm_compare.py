"""Predictors of one latency table side by side on the same splits, against the table's repeatability.

    python -m benchmarks.lpm_compare --table=data/cpu_tflite_int8_cifar_f25.csv \
        --json=docs/benchmarks/lpm_int8_compare.json --figure=docs/lpm_int8_costs.png

Every candidate is trained on the training rows of each split seed (per-arch_id 80/20 split, as
tools.train_lpm) and scored on the test rows against the load-normalised label (latency_ms / ref_ms *
median ref_ms: what a re-measurement agrees with) and the raw latency. The candidates: the LPM recipes
of configs/ (the paper's MLP, the improved MLP on both cells, least squares on the bits, the positional
kernel costs, a small graph network over each cell's DAG), gradient-boosted trees on the bits (built
here only), MACs, and the shipped float32 predictor. The ceiling is the table's
`--repeatability` re-measurement (<table>.repeat.csv): the Kendall tau of two timings of the same
architectures. The figure shows the positional model's cost of each operation by cell type and source.
"""
import argparse
import os
import time

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks import write_json
from ladnas_tf.lpm import dataset, metrics, model as lpm, registry

RECIPES = {  # name: (flagfile of the recipe, fields replaced)
    'paper MLP (112 bits)': ('configs/lpm_paper.cfg', {}),
    'improved MLP (224 bits)': ('configs/lpm_both_cells.cfg', {}),
    'linear (224 bits)': ('configs/lpm_int8_positional.cfg', {'architecture': 'linear'}),
    'positional kernels (48 counts)': ('configs/lpm_int8_positional.cfg', {}),
    'cell GNN (DAG, 224 bits)': ('configs/lpm_int8_gnn.cfg', {}),
}


def parse():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--table', required=True)
    parser.add_argument('--split_seeds', default='0,1,2')
    parser.add_argument('--shipped', default='cpu_tflite_cifar', help='A predictor of another format to score.')
    parser.add_argument('--json', required=True)
    parser.add_argument('--figure', default=None)
    parser.add_argument('--table_md', default=None, help='Also write the side-by-side table (markdown) here.')
    parser.add_argument('--skip', default='', help='Comma-separated candidate names to leave out.')
    return parser.parse_args()


def recipe_of(flagfile):
    """The LPMRecipe of a flagfile, read as tools.train_lpm reads it."""
    from absl import flags
    from tools import cli
    values = flags.FlagValues()
    cli.define_flags(lpm.LPMRecipe, flag_values=values)
    flags.DEFINE_float('test_fraction', 0.2, 'Ignored: the split is the benchmark\'s.', flag_values=values)
    values(['benchmark', f'--flagfile={flagfile}'])
    return cli.config_from_flags(lpm.LPMRecipe, flag_values=values)


def fit_recipe(recipe, fit, val):
    model = lpm.LPM(recipe)
    model.train(fit, val, progress=False)
    return model


def boosted_trees(fit, seed):
    from sklearn.ensemble import HistGradientBoostingRegressor
    y = np.log(dataset.normalised_latency(fit, dataset.reference_median(fit)))
    trees = HistGradientBoostingRegressor(max_iter=600, learning_rate=0.05, random_state=seed)
    trees.fit(dataset.encodings(fit, 'both'), y)
    return lambda df: np.exp(trees.predict(dataset.encodings(df, 'both')))


def scores(predicted, fit, test):
    normalised = dataset.normalised_latency(test, dataset.reference_median(fit))
    return {'vs_normalised': metrics.regression_metrics(normalised, predicted),
            'vs_measured': metrics.regression_metrics(test['latency_ms'].to_numpy(float), predicted)}


def ranks_only(values, fit, test):
    """A ranking that is not a latency (MACs): its Kendall tau only."""
    normalised = dataset.normalised_latency(test, dataset.reference_median(fit))
    return {'vs_normalised': {'kendall_tau': float(stats.kendalltau(normalised, values)[0])},
            'vs_measured': {'kendall_tau': float(stats.kendalltau(test['latency_ms'], values)[0])}}


def candidates(args):
    """name -> fn(training rows, test rows, seed) -> (scores, the fitted LPM or None)."""
    out = {name: (lambda fit, test, seed, r=recipe: _recipe_run(*r, fit, test, seed))
           for name, recipe in RECIPES.items()}
    out['boosted trees (224 bits)'] = lambda fit, test, seed: (scores(boosted_trees(fit, seed)(test), fit, test),
                                                                   None)
    out['MACs'] = lambda fit, test, seed: (ranks_only(test['macs'].to_numpy(float), fit, test), None)
    shipped = registry.load(args.shipped)
    out[f'shipped {args.shipped} (float32)'] = lambda fit, test, seed: (
        scores(shipped.predict_ms(dataset.encodings(test, shipped.cells)), fit, test), None)
    skip = set(filter(None, args.skip.split(',')))
    return {k: v for k, v in out.items() if k not in skip}


def _recipe_run(flagfile, replaced, fit, test, seed):
    import dataclasses
    recipe = dataclasses.replace(recipe_of(flagfile), seed=seed, **replaced)
    if recipe.val_fraction:
        fit, val = dataset.holdout(fit, seed, recipe.val_fraction)
    else:
        val = None
    model = fit_recipe(recipe, fit, val)
    return scores(model.predict_ms(dataset.encodings(test, model.cells)), fit, test), model


def ceiling(table):
    """Kendall tau and median difference of the table's re-measured architectures (raw, normalised)."""
    path = os.path.splitext(table)[0] + '.repeat.csv'
    if not os.path.exists(path):
        return None
    pairs = pd.read_csv(path)
    first, second = pairs['first_ms'] / pairs['first_ref_ms'], pairs['second_ms'] / pairs['second_ref_ms']
    return {'file': path, 'pairs': len(pairs),
            'kendall_tau_raw': float(stats.kendalltau(pairs['first_ms'], pairs['second_ms'])[0]),
            'kendall_tau_normalised': float(stats.kendalltau(first, second)[0]),
            'median_rel_diff_normalised': float(((second - first).abs() / first).median())}


def cost_figure(model, path):
    """The positional model's per-operation factor (exp of its weight in log units) by cell and source."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from ladnas_tf import search_space as ss
    w = model.regressor.layers[-1].get_weights()[0][:, 0] * model.scaling['std']
    factors = 100 * (np.exp(w) - 1).reshape(2, len(lpm.SOURCES), ss.NUM_OPS)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, cell, f in zip(axes, ('normal cell', 'reduction cell (inputs at stride 2)'), factors):
        for s, source in enumerate(lpm.SOURCES):
            ax.bar(np.arange(1, ss.NUM_OPS) + (s - 1) * 0.27, f[s, 1:], 0.27, label=f'input: {source}')
        ax.set_xticks(np.arange(1, ss.NUM_OPS), ss.PRIMITIVES[1:], rotation=35, ha='right')
        ax.axhline(0, color='k', lw=0.6)
        ax.set_title(cell)
    axes[0].set_ylabel('latency change per operation (%)')
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return factors.tolist()


def markdown(record):
    """The side-by-side table of a record (means over the split seeds), best ranking first."""
    c = record['ceiling']
    lines = [f"`{record['command']}` (commit {record['commit']}, {record['date']}, {record['machine']['device']}):",
             f"{record['rows']} rows, split seeds {record['split_seeds']}, test rows scored against the "
             'load-normalised label (and the raw latency).', '']
    if c:
        lines += [f"Ceiling: {c['pairs']} architectures of the table timed twice (`{c['file']}`): Kendall tau "
                  f"{c['kendall_tau_normalised']:.3f} load-normalised ({c['kendall_tau_raw']:.3f} raw), median "
                  f"difference {100 * c['median_rel_diff_normalised']:.2f}%.", '']
    lines += ['| predictor | Kendall tau | within 10% | MRE % | tau vs raw latency | CPU s (fit + score) |',
              '|---|---|---|---|---|---|']
    order = sorted(record['mean'], key=lambda k: -record['mean'][k]['vs_normalised']['kendall_tau'])
    for name in order:
        n, raw = record['mean'][name]['vs_normalised'], record['mean'][name]['vs_measured']
        cpu = np.mean([r['cpu_seconds'] for r in record['runs'][name].values()])
        within = f"{100 * n['share_within_10pct']:.1f}%" if 'share_within_10pct' in n else '-'
        mre = f"{n['mre_pct']:.2f}" if 'mre_pct' in n else '-'
        lines.append(f"| {name} | {n['kendall_tau']:.3f} | {within} | {mre} | {raw['kendall_tau']:.3f} | {cpu:.0f} |")
    return '\n'.join(lines) + '\n'


def main():
    args = parse()
    df = dataset.load_tables([args.table])
    runs, costs = {}, None
    for seed in map(int, args.split_seeds.split(',')):
        fit, _, test = dataset.split_rows(df, seed, 0.2)
        for name, run in candidates(args).items():
            started = time.process_time()
            result, fitted = run(fit, test, seed)
            result['cpu_seconds'] = time.process_time() - started
            runs.setdefault(name, {})[f'split{seed}'] = result
            print(f'split {seed} {name}: tau {result["vs_normalised"]["kendall_tau"]:.3f}', flush=True)
            if args.figure and costs is None and fitted is not None and fitted.recipe.architecture == 'positional':
                costs = cost_figure(fitted, args.figure)
    summary = {name: {view: {k: float(np.mean([r[view][k] for r in per.values()])) for k in per['split0'][view]}
                      for view in ('vs_normalised', 'vs_measured')} for name, per in runs.items()}
    record = write_json(args.json, {'table': args.table, 'rows': len(df), 'split_seeds': args.split_seeds,
                           'ceiling': ceiling(args.table), 'mean': summary, 'runs': runs,
                           'positional_cost_pct': costs, 'figure': args.figure})
    if args.table_md:
        with open(args.table_md, 'w', encoding='utf-8') as f:
            f.write(markdown(record))
    print(markdown(record))


if __name__ == '__main__':
    main()
