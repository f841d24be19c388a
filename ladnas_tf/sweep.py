"""A lambda (and eta) sweep: one search per value from the same base settings, then one table and one
figure of what each found, on *measured* latency (the paper's Figure 4 and Table 4 analogues).

Optionally per seed, and with latency error models (cost/errors.py) at chosen lambda_ values: how
wrong may the predictor be before the latency-aware search stops paying off? errors_table() sets each
run against the plain search (lambda_ 0) and the FLOPs-aware runs at equal MACs.

Each search has its own run directory under the sweep's, so a killed sweep resumes where it stopped
(a finished search's summary.json is read back, not recomputed). The table is rewritten after every search.

Over several machines: each runs a share of the points (select(): named points and/or every n-th from
an index), into its own sweep directory or a shared one, and writes no table of its part; merge() then
gathers the finished run directories into one sweep directory and writes the table and figure as one
machine would have. A point finished anywhere is read back, never run again.
"""
import dataclasses
import os
import shutil

import numpy as np
import pandas as pd

from ladnas_tf import run_dir as run_dir_lib, search

TABLE = 'sweep.csv'
FIGURE = 'sweep.png'
ERRORS_RUNS, ERRORS_TABLE, ERRORS_FIGURE = 'errors_runs.csv', 'errors.csv', 'errors.png'
LOCAL_CPU_TARGETS = ('cpu_tflite', 'cpu_tflite_int8')  # what retime() can time on this machine


def runs(base, lambdas=(), etas=(), latency_errors=(), error_lambdas=(), seeds=None, eta_seeds=None):
    """(name, SearchConfig) per run: latency-aware runs keep base's LPM, FLOPs-aware runs drop it;
    each errors.Spec in latency_errors at each of error_lambdas. With seeds, every run once per seed
    (seed-major, so a sweep cut short has whole seeds; FLOPs-aware runs at eta_seeds, default all);
    within a seed the references (error-free and FLOPs-aware runs) come before the error models."""
    plain = dict(target_latency_ms=None, latency_error='none', latency_error_size=0.0, latency_error_lpm=None)
    out = []
    for seed in ([base.seed] if seeds is None else seeds):
        suffix, cfg = ('' if seeds is None else f'-seed{seed}'), dataclasses.replace(base, seed=int(seed), **plain)
        out += [(f'lambda_{v:g}{suffix}', dataclasses.replace(cfg, lambda_=float(v), eta=0.0)) for v in lambdas]
        if eta_seeds is None or seed in eta_seeds:
            out += [(f'eta_{v:g}{suffix}', dataclasses.replace(cfg, lambda_=0.0, eta=float(v), lpm_dir=None))
                    for v in etas]
        out += [(f'lambda_{v:g}-{e.name}{suffix}',
                 dataclasses.replace(cfg, lambda_=float(v), eta=0.0, latency_error=e.kind,
                                     latency_error_size=e.size, latency_error_lpm=e.lpm_dir))
                for v in error_lambdas for e in latency_errors]
    if not out:
        raise search.SearchError('a sweep needs at least one lambda_ or eta value')
    if latency_errors and not error_lambdas:
        raise search.SearchError('latency error models need the lambda_ values to run them at (error_lambdas)')
    for _, config in out:
        config.check()
    return out


def row(name, config, summary):
    lat = summary.get('latency') or {}
    err = lat.get('latency_error') or {}
    return {'run': name, 'lambda_': config.lambda_, 'eta': config.eta, 'seed': config.seed,
            'latency_error': config.latency_error, 'latency_error_size': config.latency_error_size,
            'error_mre': err.get('mre', 0.0 if 'predicted_ms' in lat else np.nan),
            'error_kendall_tau': err.get('kendall_tau', 1.0 if 'predicted_ms' in lat else np.nan),
            'supernet_valid_accuracy': summary['supernet_valid_accuracy'],
            'supernet_valid_images': summary.get('supernet_valid_images', np.nan),
            'predicted_ms': lat.get('predicted_ms', np.nan), 'unit_ms': lat.get('unit_ms', np.nan),
            # each a multiple of DARTS_V2 on its own device (the predictor's; the measuring machine), both named
            'predicted_vs_reference': lat.get('predicted_vs_reference', np.nan),
            'measured_vs_reference': lat.get('measured_vs_reference', np.nan),
            'predicted_on': lat.get('predicted_on'), 'measured_on': lat.get('measured_on'),
            'searched_predicted_ms': err.get('searched_predicted_ms', lat.get('predicted_ms', np.nan)),
            'measured_ms': lat.get('measured_ms', np.nan),
            'reference_ms': lat.get('reference_ms', np.nan), 'params': lat.get('params', np.nan),
            'macs': lat.get('macs', np.nan), 'steps': summary['steps'], 'seconds': summary['seconds'],
            'genotype': summary['genotype']}


def devices(df):
    """{'predicted': [...], 'measured': [...]}: the devices a sweep's predictions and measurements were made on."""
    return {what: sorted(set(df[f'{what}_on'].dropna())) if f'{what}_on' in df else []
            for what in ('predicted', 'measured')}


def finished_summary(run_dir, config):
    """The summary.json of a finished search of this config in run_dir, reported as this config asks
    (its final evaluation on final_eval_batches), else None. config.json keeps the settings the search
    started with: a report-only setting changed since is judged by the summary itself."""
    saved = run_dir_lib.read_json_or_none(os.path.join(run_dir, search.CONFIG_FILE))
    summary = run_dir_lib.read_json_or_none(os.path.join(run_dir, search.SUMMARY_FILE))
    if saved is None or not isinstance(summary, dict):
        return None
    same = isinstance(saved, dict) and not search.settings_differ(saved, search.run_settings(config))
    reported_as_asked = (not config.final_eval_batches or summary.get('supernet_valid_images')
                         == config.final_eval_batches * config.batch_size)
    return summary if same and reported_as_asked else None


def normalise(df):
    """measured_ms rescaled by each run's own reference timing (DARTS_V2 timed just around it) to the
    sweep's median reference: load on the machine during one measurement cancels out."""
    df = df.copy()
    df['measured_norm_ms'] = df['measured_ms'] / df['reference_ms'] * df['reference_ms'].median()
    return df


def select(plan, points=None, worker_index=0, num_workers=1):
    """The share of a plan one process runs: the points named in `points` (all when None), then of
    those every num_workers-th from worker_index (round robin: shares within one point of each other,
    each in plan order)."""
    names = [name for name, _ in plan]
    if points is not None:
        unknown = [p for p in points if p not in names]
        if unknown:
            raise search.SearchError(f'unknown sweep point(s) {", ".join(unknown)} (the plan: {", ".join(names)})')
        plan = [(name, config) for name, config in plan if name in set(points)]
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise search.SearchError(f'num_workers must be a positive integer, got {num_workers!r}')
    if isinstance(worker_index, bool) or not isinstance(worker_index, int) or not 0 <= worker_index < num_workers:
        raise search.SearchError(f'worker_index must lie in [0, {num_workers}), got {worker_index!r}')
    return plan[worker_index::num_workers]


def run(base, out_dir, lambdas=(), etas=(), log=print, retime_rounds=0, latency_errors=(), error_lambdas=(),
        seeds=None, eta_seeds=None, finished_only=False, points=None, worker_index=0, num_workers=1,
        **search_kwargs):
    """Runs (or resumes) every search of the sweep, then (retime_rounds > 0) re-times all derived
    networks together; returns the table (also written to out_dir). finished_only: run nothing, report
    (and re-time) the searches of the plan that finished: a sweep cut short by its time budget.
    points, worker_index, num_workers: run only this share of the plan (select()); a share writes no
    table or figure (merge() writes them once every share has finished) and returns its own rows."""
    plan = runs(base, lambdas, etas, latency_errors, error_lambdas, seeds, eta_seeds)
    share = select(plan, points, worker_index, num_workers)
    whole = len(share) == len(plan)
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for i, (name, config) in enumerate(share):
        run_dir = os.path.join(out_dir, name)
        summary = finished_summary(run_dir, config)
        if summary is None and finished_only:
            log(f'[{i + 1}/{len(share)}] {name}: not finished, left out')
            continue
        log(f'[{i + 1}/{len(share)}] {name}' + ('' if summary is None else ': finished, read back'))
        summary = summary or search.search(config, run_dir, log=log, **search_kwargs)
        rows.append(row(name, config, summary))
        if whole:
            df = normalise(pd.DataFrame(rows))
            _write(df, out_dir)
    if not whole:
        log(f'{len(rows)} of the {len(plan)} points of the sweep done here ({", ".join(n for n, _ in share)}); '
            'the table and figure: merge the sweep directories (tools.sweep --merge)')
        df = normalise(pd.DataFrame(rows)) if rows else pd.DataFrame()
        df.attrs['share'] = True
        return df
    if not rows:
        raise search.SearchError(f'{out_dir}: no search of this sweep has finished yet')
    if retime_rounds and df['measured_ms'].notna().all():
        df = retime(df, out_dir, retime_rounds, log=log)
        _write(df, out_dir)
    plot(df, os.path.join(out_dir, FIGURE))
    if (df['latency_error'] != 'none').any():
        write_errors(df, out_dir)
    return df


def merge(base, out_dir, sources=(), lambdas=(), etas=(), log=print, retime_rounds=0, latency_errors=(),
          error_lambdas=(), seeds=None, eta_seeds=None, finished_only=False):
    """The table and figure of a sweep run in shares: the run directory of each point finished in one
    of the sweep directories `sources` (and not in out_dir already) is copied into out_dir, then the
    table, figure and re-timing are made as run() makes them for the whole plan. Nothing is searched.
    A point finished nowhere is refused by name, unless finished_only (a table of what finished)."""
    plan = runs(base, lambdas, etas, latency_errors, error_lambdas, seeds, eta_seeds)
    os.makedirs(out_dir, exist_ok=True)
    missing = []
    for name, config in plan:
        target = os.path.join(out_dir, name)
        if finished_summary(target, config) is not None:
            continue
        found = [os.path.join(s, name) for s in sources if os.path.realpath(os.path.join(s, name))
                 != os.path.realpath(target) and finished_summary(os.path.join(s, name), config) is not None]
        if not found:
            missing.append(name)
            continue
        log(f'{name}: from {found[0]}')
        with run_dir_lib.atomic_path(target) as temp:  # replaces an unfinished start of the point, finished elsewhere
            shutil.copytree(found[0], temp)
    if missing and not finished_only:
        raise search.SearchError(f'sweep point(s) finished in none of {", ".join([out_dir, *sources])}: '
                                 f'{", ".join(missing)} (run them, or pass --finished_only for a partial table)')
    return run(base, out_dir, lambdas, etas, log, retime_rounds, latency_errors, error_lambdas, seeds, eta_seeds,
               finished_only=True)


def write_errors(df, out_dir):
    """errors_runs.csv, errors.csv (per point) and errors.png of an error sweep's table."""
    per_run, points = errors_table(df)
    per_run.to_csv(os.path.join(out_dir, ERRORS_RUNS), index=False)
    points.to_csv(os.path.join(out_dir, ERRORS_TABLE), index=False)
    plot_errors(points, per_run, os.path.join(out_dir, ERRORS_FIGURE))
    return per_run, points


def retime(df, out_dir, rounds=3, target_name=None, threads=1, log=print):
    """Every derived network timed again in one sitting, in alternation (round r times each network
    once), so that all see the same machine: the sweep's fairest latency comparison. Adds retimed_ms
    (median over rounds) and retimed_ref_ms (the reference's median) to the table. target_name: default
    the searches' own CPU target (cpu_tflite, or cpu_tflite_int8 for an int8 deployment)."""
    from ladnas_tf import genotypes, search_space
    from ladnas_tf.graph.setting import Setting
    from ladnas_tf.profiling import measure
    from ladnas_tf.profiling.targets import registry as targets
    latency = run_dir_lib.read_json(os.path.join(out_dir, df['run'].iloc[0], search.SUMMARY_FILE))['latency']
    setting = Setting.from_key(latency['setting'])
    local = latency.get('target') if latency.get('target') in LOCAL_CPU_TARGETS else LOCAL_CPU_TARGETS[0]
    target = targets.make_target(target_name or local, threads)
    runners = []
    for name in df['run']:
        with open(os.path.join(out_dir, name, 'genotype.json')) as f:
            genotype = search_space.parse(f.read())
        runners.append(target.runner(target.prepare(genotype, setting)[0]))
    reference = target.runner(target.prepare(genotypes.DARTS_V2, setting)[0])
    times = np.zeros((rounds, len(runners), 2))
    for r in range(rounds):
        for i, runner in enumerate(runners):
            stats, ref, _ = measure.measure_with_reference(runner, reference)
            times[r, i] = stats.latency_ms, ref.latency_ms
        log(f'retime round {r + 1}/{rounds}: ' + ', '.join(f'{n} {t:.2f}' for n, t in zip(df['run'], times[r, :, 0])))
    df = df.copy()
    df['retimed_ms'], df['retimed_ref_ms'] = np.median(times[..., 0], 0), np.median(times[..., 1], 0)
    return df


def _write(df, out_dir):
    with run_dir_lib.atomic_path(os.path.join(out_dir, TABLE)) as temp:  # a kill leaves the last whole table
        df.to_csv(temp, index=False)


def plot(df, path):
    """Left: measured latency and supernet accuracy against lambda_. Right: MACs against measured
    latency, latency-aware and FLOPs-aware runs side by side."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    if 'latency_error' in df:  # the error models have their own figure (plot_errors)
        df = df[df['latency_error'] == 'none']
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    column, label = (('retimed_ms', 'measured (re-timed together)') if 'retimed_ms' in df
                     else ('measured_norm_ms', 'measured (normalised)'))
    lat = df[df['eta'] == 0].sort_values('lambda_')
    measured, predicted, unit = lat[column], lat['predicted_ms'], 'ms'
    if (lat['lambda_'] == 0).any():  # relative to the plain search: the LPM's machine and this one agree
        base = lat[lat['lambda_'] == 0].iloc[0]
        measured, predicted, unit = measured / base[column], predicted / base['predicted_ms'], 'x lambda_ = 0'
    else:  # each a multiple of DARTS_V2 on its own device: milliseconds of two machines never share an axis
        reference = lat['retimed_ref_ms'] if column == 'retimed_ms' else df['reference_ms'].median()
        measured, unit = measured / reference, 'x DARTS_V2, each on its own device'
        predicted = predicted / lat['unit_ms'] if 'unit_ms' in lat else predicted * np.nan
    left.plot(lat['lambda_'], measured, 'o-', color='tab:blue', label=label)
    left.plot(lat['lambda_'], predicted, 's--', color='tab:cyan', label='LPM prediction')
    left.set_xlabel('lambda_ (per DARTS_V2 latency)')
    left.set_ylabel(f'latency of the derived network ({unit})')
    left.legend(loc='lower left', fontsize=8)
    acc = left.twinx()
    acc.plot(lat['lambda_'], lat['supernet_valid_accuracy'], '^:', color='tab:red')
    middle = lat['supernet_valid_accuracy'].mean()
    acc.set_ylim(middle - 3, middle + 3)  # a 6-point span: small differences stay small
    acc.set_ylabel('supernet accuracy (%)', color='tab:red')
    left.set_title('latency-aware search')
    for kind, sub, marker in (('latency-aware', lat, 'o'), ('FLOPs-aware', df[df['eta'] > 0], 'x')):
        right.scatter(sub['macs'] / 1e6, sub[column], marker=marker, label=kind)
        for _, r in sub.iterrows():
            right.annotate(r['run'], (r['macs'] / 1e6, r[column]), fontsize=7)
    right.set_xlabel('MACs of the derived network (M)')
    right.set_ylabel(label.replace('measured', 'measured latency, ms,'))
    right.legend(fontsize=8)
    right.set_title('FLOPs- vs latency-aware')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- the error sweep: how wrong may the predictor be? ----

def latency_column(df):
    """The sweep's fairest latency: re-timed together when every run was, else normalised."""
    return 'retimed_ms' if 'retimed_ms' in df and df['retimed_ms'].notna().all() else 'measured_norm_ms'


def flops_aware_ms(df, macs, column):
    """The FLOPs-aware family's latency at `macs`, interpolated linearly between its runs (the plain
    search is its eta = 0 end; per MACs value the mean over seeds); NaN outside their MACs range."""
    family = df[(df['eta'] > 0) | ((df['lambda_'] == 0) & (df.get('latency_error', 'none') == 'none'))]
    points = family.groupby('macs')[column].mean().sort_index()
    if len(points) < 2:
        return np.full(np.shape(macs), np.nan)
    out = np.interp(macs, points.index.to_numpy(float), points.to_numpy(float))
    return np.where((macs < points.index.min()) | (macs > points.index.max()), np.nan, out)


def errors_table(df):
    """(per run, per point) of an error sweep. Per run: latency_cut (vs the mean of the lambda_ 0 runs)
    and vs_flops_aware (vs the FLOPs-aware family at the run's MACs; negative: faster). Per point
    (lambda_, error model, size): the mean over seeds and the seeds' min and max."""
    column = latency_column(df)
    df = df.copy()
    plain = df[(df['lambda_'] == 0) & (df['eta'] == 0) & (df['latency_error'] == 'none')]
    df['latency_ms'] = df[column]
    df['latency_cut'] = df[column] / plain[column].mean() - 1
    df['vs_flops_aware'] = df[column] / flops_aware_ms(df, df['macs'].to_numpy(float), column) - 1
    keys = ['eta', 'lambda_', 'latency_error', 'latency_error_size']
    stats = {'seeds': ('seed', 'count')}
    for name in ('error_mre', 'error_kendall_tau', 'latency_ms', 'latency_cut', 'vs_flops_aware',
                 'supernet_valid_accuracy', 'macs'):
        stats.update({name: (name, 'mean'), f'{name}_min': (name, 'min'), f'{name}_max': (name, 'max')})
    points = df.groupby(keys, dropna=False, sort=False).agg(**stats).reset_index()
    return df, points


def plot_errors(points, per_run, path):
    """Measured latency cut, the edge over FLOPs-aware at equal MACs and supernet accuracy against the
    predictor's error (MRE; Kendall tau), one marker per error model, bars: the seeds' range."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    lat = points[points['eta'] == 0]
    runs_ = per_run[per_run['eta'] == 0]
    panels = [(axes[0, 0], 'error_mre', 'latency_cut', 'measured latency vs lambda_ 0'),
              (axes[0, 1], 'error_kendall_tau', 'latency_cut', 'measured latency vs lambda_ 0'),
              (axes[1, 0], 'error_mre', 'vs_flops_aware', 'latency vs FLOPs-aware at equal MACs'),
              (axes[1, 1], 'error_mre', 'supernet_valid_accuracy', 'supernet accuracy (%)')]
    markers = {'none': 'o', 'additive': 'P', 'multiplicative': 'D', 'systematic': 's', 'predictor': '*'}
    for ax, x, y, label in panels:
        for kind, sub in lat.groupby('latency_error', sort=False):
            for lam, part in sub.groupby('lambda_'):
                name = f'lambda_ {lam:g}, {kind}' if kind != 'none' else f'lambda_ {lam:g}, exact LPM'
                scale = 1 if y == 'supernet_valid_accuracy' else 100
                ax.errorbar(part[x], part[y] * scale, yerr=[(part[y] - part[f'{y}_min']) * scale,
                                                            (part[f'{y}_max'] - part[y]) * scale],
                            fmt=markers.get(kind, 'o'), capsize=3, label=name, ms=8)
                seeds = runs_[(runs_['latency_error'] == kind) & (runs_['lambda_'] == lam)]
                ax.scatter(seeds[x], seeds[y] * scale, s=10, color='grey', zorder=3)
        if y != 'supernet_valid_accuracy':
            ax.axhline(0, color='black', lw=0.6)
        ax.set_xlabel({'error_mre': "predictor's MRE against the true LPM",
                       'error_kendall_tau': "predictor's Kendall tau against the true LPM"}[x])
        ax.set_ylabel(label if y == 'supernet_valid_accuracy' else f'{label} (%)')
    axes[0, 1].invert_xaxis()  # worse to the right in every panel
    axes[0, 0].legend(fontsize=7)
    fig.suptitle('latency-aware search with an erroneous predictor (markers: seeds\' mean, bars: range, '
                 'grey: each seed)', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
