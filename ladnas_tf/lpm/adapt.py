"""Few-shot adaptation: a new device's LPM from a base LPM and a few timings of the new device.

Methods, from the fewest parameters to the most:
  scale          one factor: log y = a + log base(x), a by least squares in log space
  affine_log     log y = a + b log base(x) (b kept in [0.2, 5])
  op_costs       log y = a + log base(x) + sum over cells and operations of count x cost: the base corrected
                 by one cost per operation and cell type, fitted on Huber's loss (a row timed under load
                 cannot drag it) with an L2 penalty toward no correction, chosen among OP_COST_L2 by
                 cross-validation on the rows; the base's ranking reordered where this device's kernels
                 differ (int8 on another CPU: docs/fewshot_lpm_int8.md)
  affine_op_costs  the same with log y = a + b log base(x) + ..., b fitted with the costs (kept in
                 SLOPE_RANGE); why: a device whose latencies spread more than the base's (b > 1) needs the
                 base weighed against the costs, which a slope of 1 cannot (the family-26 int8 CPU)
  finetune_last  a copy of the base, after `scale`, whose output layer is trained on the rows
                 (anchored to its start by an L2 penalty: the rows are few)
  finetune_all   the same for every layer, at a smaller learning rate
  scratch        the base's network and recipe trained from a fresh start on the rows alone
                 (the comparison: what the base is worth)
`auto` cross-validates the candidates on the rows (leave-one-out up to 10 rows, else 5-fold) and keeps,
by this rule (choose_by_scores): for a search the order of architectures matters most, so
  1. rank first: the best Kendall tau of the pooled out-of-fold predictions wins; a tau less than the
     standard error of Kendall's tau at n rows below it, sqrt(2 (2n + 5) / (9 n (n - 1))) (0.29 at 8
     rows, 0.16 at 20, 0.10 at 50), ranks as well: so small a difference is no evidence of a better
     order (scale and affine_log, which order every architecture as the base does, differ by as much as
     0.07 at 8 rows through their per-fold fits alone);
  2. error breaks those near-ties: the lowest cross-validated error, the mean |log(predicted / measured)|
     (in %, close to the relative error), wins;
  3. errors within ERROR_TIE_PCT points of it are equal (a difference far below timing noise), and then
     the simpler method (earlier in METHODS) is kept.
A method is a candidate only when every training fold still has the rows it needs (MIN_ROWS). Fewer than
MIN_ADAPT_ROWS rows are refused, whatever the method: with fewer, cross-validation cannot say whether the
result ranks the device, and a predictor nobody can judge would be written.

The base and the rows must be of one setting and one numeric format (float32 / int8 rank architectures
differently: adapting across formats is refused unless forced).

scale and affine_log change no weight: for a base trained on log latency (target_scaling log) an affine
map in log space is an affine map of the regressor's output, i.e. new `scaling` mean and std, so the
result is an ordinary LPM that LPM.load reads and the search differentiates with no special case.

Labels: a base trained on the load-normalised label, adapted with rows that carry ref_ms, keeps that
label, expressed at the median ref_ms of the new rows; otherwise the measured latency_ms.
"""
import contextlib
import dataclasses
import math
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from ladnas_tf import genotypes, run_dir, search_space
from ladnas_tf.lpm import dataset, metrics, model as lpm, registry, training
from ladnas_tf.lpm.dataset import genotype_encoding
from ladnas_tf.profiling.table import portable

METHODS = ('scale', 'affine_log', 'op_costs', 'affine_op_costs', 'finetune_last', 'finetune_all', 'scratch')
LINEAR = ('scale', 'affine_log', 'op_costs', 'affine_op_costs')  # fitted in closed form: no seed, no settings
MIN_ROWS = {'scale': 1, 'affine_log': 3, 'op_costs': 5, 'affine_op_costs': 5, 'finetune_last': 5,
            'finetune_all': 5, 'scratch': 5}
OP_COST_L2 = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)  # squared log units; half decades, CV picks on the rows
HUBER_K = 1.345  # Huber's threshold in robust std (95% efficient on normal errors): the textbook value
HUBER_STEPS = 30  # reweightings: the weights settle in far fewer at tens of rows
MIN_ADAPT_ROWS = 5  # leave-one-out then trains scale and affine_log on 4 rows and scores 5 predictions
ERROR_TIE_PCT = 0.01  # log-MRE points this close are equal (auto rule, step 3): repeated timings differ by ~1%
SLOPE_RANGE = (0.2, 5.0)
LOO_UP_TO = 10   # leave-one-out CV up to this many rows, else FOLDS-fold
FOLDS = 5


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Optimisation of the trained methods: full-batch Adam on MAE in the model's scaled units."""
    last_lr: float = 1e-2
    last_steps: int = 300
    all_lr: float = 1e-3
    all_steps: int = 300
    anchor: float = 1e-3         # L2 pull towards the starting weights (fine-tuning only)
    scratch_lr: float = 3e-3
    scratch_steps: int = 1500
    patience: int = 150          # early stopping (steps) when >= EARLY_STOP_ROWS rows
    early_stop_rows: int = 10
    val_share: float = 0.2


FIT = FitSettings()


class AdaptError(lpm.LPMError):
    """An adaptation that cannot be done as asked (too few rows, another setting or numeric format,
    unknown method)."""


# ---- what the new rows are, as the base sees them ----

def check_compatible(base, df, force_format=False):
    """Refuses rows of another evaluation network than the base's (its setting key), or of another numeric
    format (unless forced), and too few rows to judge the result."""
    setting = str(df['setting'].iloc[0])
    if setting != base.metadata.get('setting'):
        raise AdaptError(f'the base LPM predicts setting {base.metadata.get("setting")!r}, the table is '
                         f'{setting!r}: adapt within one setting')
    have, rows = training.predictor_format(base.metadata), training.format_of(df)
    if have != rows and not force_format:
        raise AdaptError(f'the base LPM predicts {have} latency and the table holds {rows} latencies: adapt a '
                         f'base of the same numeric format (or pass --force_format)')
    if len(df) < MIN_ADAPT_ROWS:
        raise AdaptError(f'{len(df)} rows of the new device are too few to adapt: at least {MIN_ADAPT_ROWS}, so '
                         'that cross-validation can say how well the result ranks them')


def new_label(base, df):
    """(label dict, label ms per row) of the new rows (see the module docstring)."""
    if base.label['kind'] == 'normalised' and 'ref_ms' in df.columns:
        ref = dataset.reference_median(df)
        desc = df.attrs.get('target_description') or {}
        label = {'kind': 'normalised', 'ref_median_ms': ref, 'reference': desc.get('reference')}
        return label, dataset.normalised_latency(df, ref)
    return {'kind': 'latency'}, df['latency_ms'].to_numpy(np.float64)


def _need(method, n):
    if method not in MIN_ROWS:
        raise AdaptError(f'unknown method {method!r} (known: auto, {", ".join(METHODS)})')
    if n < MIN_ROWS[method]:
        raise AdaptError(f'{method} needs at least {MIN_ROWS[method]} adaptation rows, got {n}')


# ---- the methods: (base, x, y_ms, label) -> LPM ----

def _derived(base, scaling, regressor, label):
    recipe = dataclasses.replace(base.recipe, label=label['kind'])
    return lpm.LPM(recipe, regressor, {**base.metadata, 'scaling': scaling, 'label': label})


def _log_affine(base, a, b, label):
    """The base followed by log y = a + b log y_base, as new output scaling (see module docstring)."""
    s = base.scaling
    if s['kind'] == 'log':
        scaling = {'kind': 'log', 'mean': a + b * s['mean'], 'std': b * s['std']}
    elif b == 1.0:  # a pure factor is linear in ms too
        scaling = {'kind': s['kind'], 'mean': math.exp(a) * s['mean'], 'std': math.exp(a) * s['std']}
    else:
        raise AdaptError(f'affine_log needs a base trained with target_scaling log (this one: {s["kind"]}); '
                         'use scale or finetune_last')
    return _derived(base, scaling, base.regressor, label)


def fit_scale(base, x, y, label):
    return _log_affine(base, float(np.mean(np.log(y) - np.log(base.predict_ms(x)))), 1.0, label)


def huber_ridge(features, y, l2):
    """lpm.ridge on Huber's loss, by iteratively reweighted least squares: a residual beyond HUBER_K
    robust standard deviations (from the median absolute residual) counts linearly, not squared."""
    weights = np.ones(len(y))
    for _ in range(HUBER_STEPS):
        w, bias = lpm.ridge(features, y, l2, weights)
        residual = y - features @ w - bias
        scale = 1.4826 * np.median(np.abs(residual - np.median(residual)))
        if scale <= 0:  # the rows fitted exactly: nothing to down-weight
            break
        weights = np.minimum(1.0, HUBER_K * scale / np.maximum(np.abs(residual), 1e-12))
    return w, bias


def _op_cost_fit(log_base, counts, log_y, free_slope, l2):
    """(slope, costs, bias) of log y = bias + slope log base + counts . costs: slope 1 (op_costs), or fitted
    unpenalised with the costs and kept in SLOPE_RANGE, the costs then refitted at the slope kept."""
    slope = 1.0
    if free_slope:
        w, _ = huber_ridge(np.column_stack([log_base, counts]), log_y - log_base,
                           np.r_[0.0, np.full(counts.shape[1], l2)])
        slope = float(np.clip(1.0 + w[0], *SLOPE_RANGE))
    costs, bias = huber_ridge(counts, log_y - slope * log_base, l2)
    return slope, costs, bias


def cv_op_cost_l2(log_base, counts, log_y, free_slope):
    """The OP_COST_L2 of the lowest cross-validated mean |log error| on these rows (auto's folds)."""
    def error(l2):
        total = 0.0
        for held in folds(len(log_y), 0):
            train = np.setdiff1d(np.arange(len(log_y)), held)
            slope, costs, bias = _op_cost_fit(log_base[train], counts[train], log_y[train], free_slope, l2)
            total += np.abs(log_y[held] - slope * log_base[held] - counts[held] @ costs - bias).sum()
        return total
    return min(OP_COST_L2, key=error)


def _fit_op_costs(base, x, y, label, free_slope):
    """The base corrected by a cost per operation and cell type (module docstring), as one Keras model: the
    base's regressor plus a linear unit on fixed operation counts, in new log scaling that holds the slope."""
    if base.scaling['kind'] != 'log':
        raise AdaptError(f'{"affine_op_costs" if free_slope else "op_costs"} needs a base trained with '
                         f'target_scaling log (this one: {base.scaling["kind"]}); use scale or finetune_last')
    matrix = lpm.op_count_matrix(base.cells)
    log_base, counts, log_y = np.log(base.predict_ms(x)), x @ matrix, np.log(y)
    l2 = cv_op_cost_l2(log_base, counts, log_y, free_slope)
    slope, costs, bias = _op_cost_fit(log_base, counts, log_y, free_slope, l2)
    inputs = keras.Input((base.input_size,), name='encoding')
    fixed = keras.layers.Dense(matrix.shape[1], use_bias=False, trainable=False, name='op_counts')
    correction = keras.layers.Dense(1, use_bias=False, name='op_costs_out')
    regressor = keras.Model(inputs, keras.ops.add(_copy(base)(inputs), correction(fixed(inputs))), name='lpm')
    fixed.set_weights([matrix])
    # log y = bias + slope (mean + std output) + counts . costs = mean' + std' (output + counts . costs / std')
    mean, std = bias + slope * base.scaling['mean'], slope * base.scaling['std']
    correction.set_weights([(costs / std)[:, None].astype(np.float32)])
    return _derived(base, {'kind': 'log', 'mean': mean, 'std': std}, regressor, label)


def fit_op_costs(base, x, y, label):
    return _fit_op_costs(base, x, y, label, free_slope=False)


def fit_affine_op_costs(base, x, y, label):
    return _fit_op_costs(base, x, y, label, free_slope=True)


def fit_affine_log(base, x, y, label):
    u, v = np.log(base.predict_ms(x)), np.log(y)
    b = float(np.clip(np.cov(u, v, bias=True)[0, 1] / np.var(u), *SLOPE_RANGE)) if np.var(u) > 0 else 1.0
    return _log_affine(base, float(np.mean(v) - b * np.mean(u)), b, label)


def _copy(base):
    """A fresh regressor of the base's shape holding the base's weights (a copy, not the compiled model)."""
    clone = lpm.build(base.recipe, base.input_size)
    clone.set_weights(base.regressor.get_weights())
    return clone


def _dense_variables(regressor, last_only):
    layers = [l for l in regressor.layers if isinstance(l, keras.layers.Dense) and l.name not in lpm.FIXED_LAYERS]
    if last_only:
        layers = [l for l in layers if l.name.endswith('_out')]
    return [v for l in layers for v in (l.kernel, l.bias) if v is not None]


def _early_stop_split(n, seed, settings):
    """(fit, validation) row indices: a validation share only when the rows are enough to spare it."""
    index = np.random.default_rng(seed).permutation(n)
    if n < settings.early_stop_rows:
        return index, None
    k = max(1, int(round(settings.val_share * n)))
    return index[k:], index[:k]


def _train(regressor, variables, x, t, lr, steps, anchor, val, patience):
    """Full-batch Adam on mean |output - t| (+ anchor * squared distance to the start); with `val`
    (x, t) rows, keeps the weights of the best validation loss and stops after `patience` steps
    without improvement. Returns the steps run."""
    regressor.trainable = True
    opt = keras.optimizers.Adam(lr)
    opt.build(variables)
    start = [tf.constant(v.numpy()) for v in variables]
    x, t = tf.constant(x, tf.float32), tf.constant(t[:, None], tf.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.abs(regressor(x, training=True) - t))
            if anchor:
                loss += anchor * tf.add_n([tf.reduce_sum(tf.square(v - s)) for v, s in zip(variables, start)])
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))

    def val_loss():
        return float(tf.reduce_mean(tf.abs(regressor(val[0], training=False) - val[1])))

    if val is not None:
        val = (tf.constant(val[0], tf.float32), tf.constant(val[1][:, None], tf.float32))
    best, best_weights, best_step = (val_loss(), [v.numpy() for v in variables], 0) if val else (None,) * 3
    done = 0
    for done in range(1, steps + 1):
        step()
        if val is not None and done % 10 == 0:
            loss = val_loss()
            if loss < best:
                best, best_weights, best_step = loss, [v.numpy() for v in variables], done
            elif done - best_step >= patience:
                break
    if val is not None:
        for v, w in zip(variables, best_weights):
            v.assign(w)
    regressor.trainable = False
    return done


def _finetune(base, x, y, label, last_only, settings, seed):
    start = fit_scale(base, x, y, label)
    regressor = _copy(base)
    model = _derived(start, start.scaling, regressor, label)
    t = model.scaled(y)
    lr, steps = (settings.last_lr, settings.last_steps) if last_only else (settings.all_lr, settings.all_steps)
    fit, val = (np.arange(len(y)), None) if last_only else _early_stop_split(len(y), seed, settings)
    _train(regressor, _dense_variables(regressor, last_only), x[fit], t[fit], lr, steps, settings.anchor,
           None if val is None else (x[val], t[val]), settings.patience)
    return model


def fit_finetune_last(base, x, y, label, settings=FIT, seed=0):
    return _finetune(base, x, y, label, True, settings, seed)


def fit_finetune_all(base, x, y, label, settings=FIT, seed=0):
    return _finetune(base, x, y, label, False, settings, seed)


def fit_scratch(base, x, y, label, settings=FIT, seed=0):
    """The base's network and target scaling, a fresh initialisation, trained on these rows only."""
    recipe = dataclasses.replace(base.recipe, label=label['kind'], seed=seed)
    model = lpm.LPM(recipe)
    model.fit_scaling(y)
    model.metadata = {**base.metadata, 'scaling': model.scaling, 'label': label}
    model.label = label
    fit, val = _early_stop_split(len(y), seed, settings)
    t = model.scaled(y)
    _train(model.regressor, _dense_variables(model.regressor, False), x[fit], t[fit], settings.scratch_lr,
           settings.scratch_steps, 0.0, None if val is None else (x[val], t[val]), settings.patience)
    return model


FITS = {'scale': fit_scale, 'affine_log': fit_affine_log, 'op_costs': fit_op_costs,
        'affine_op_costs': fit_affine_op_costs, 'finetune_last': fit_finetune_last,
        'finetune_all': fit_finetune_all, 'scratch': fit_scratch}


def fit(method, base, x, y, label, settings=FIT, seed=0):
    """One method on encodings x [n, input_size] and labels y (ms) [n]: an LPM (not saved)."""
    _need(method, len(y))
    if method in LINEAR:
        return FITS[method](base, x, y, label)
    return FITS[method](base, x, y, label, settings, seed)


# ---- choosing by cross-validation ----

def folds(n, seed):
    """Index arrays of the held-out part of each fold: leave-one-out up to LOO_UP_TO rows."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[i:i + 1] for i in range(n)] if n <= LOO_UP_TO else np.array_split(order, FOLDS)


def candidates(n, methods=METHODS, base=None):
    """Methods every CV training fold has enough rows for (and the base can represent)."""
    smallest = n - max(len(f) for f in folds(n, 0)) if n >= 2 else 0
    log_base = base is None or base.scaling['kind'] == 'log'
    return [m for m in methods if MIN_ROWS[m] <= smallest and (m != 'affine_log' or log_base)]


def cv_scores(method, base, x, y, label, settings=FIT, seed=0):
    """Out-of-fold predictions of one method pooled over the folds, scored: log-MRE (the criterion),
    MRE and Kendall tau."""
    predicted = np.empty_like(y)
    for held in folds(len(y), seed):
        train = np.setdiff1d(np.arange(len(y)), held)
        predicted[held] = fit(method, base, x[train], y[train], label, settings, seed).predict_ms(x[held])
    scores = metrics.regression_metrics(y, predicted)
    return {'log_mre_pct': float(100 * np.mean(np.abs(np.log(predicted / y)))), 'mre_pct': scores['mre_pct'],
            'kendall_tau': scores['kendall_tau']}


def tau_tie(n):
    """How far below the best Kendall tau of n rows a tau still ranks as well (auto rule, step 1): the
    standard error of Kendall's tau at n rows (under independence)."""
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))) if n >= 2 else math.inf


def choose_by_scores(scores, n):
    """The method the auto rule (module docstring) keeps among {method: CV scores} (in METHODS order,
    simplest first) of n rows. An undefined tau (constant predictions) ranks last."""
    tau = {m: s['kendall_tau'] if math.isfinite(s['kendall_tau']) else -math.inf for m, s in scores.items()}
    best_tau = max(tau.values())
    ranking = [m for m in scores if tau[m] >= best_tau - tau_tie(n) - 1e-12]
    lowest = min(scores[m]['log_mre_pct'] for m in ranking)
    return next(m for m in ranking if scores[m]['log_mre_pct'] <= lowest + ERROR_TIE_PCT)


def choose(base, x, y, label, methods=METHODS, settings=FIT, seed=0):
    """(best method by the auto rule, {method: CV scores}); with too few rows to cross-validate, `scale`
    unscored."""
    eligible = candidates(len(y), methods, base)
    if not eligible:
        if 'scale' not in methods:
            raise AdaptError(f'{len(y)} rows are too few to cross-validate {", ".join(methods)}')
        return 'scale', {}
    scores = {m: cv_scores(m, base, x, y, label, settings, seed) for m in eligible}
    return choose_by_scores(scores, len(y)), scores


# ---- the whole adaptation ----

def adapt(base, df, method='auto', settings=FIT, seed=0, methods=METHODS, force_format=False):
    """(LPM for df's device, report). df: dataset.load_tables rows of the new device."""
    check_compatible(base, df, force_format)
    label, y = new_label(base, df)
    x = dataset.encodings(df, base.cells)
    if method == 'auto':
        method, scores = choose(base, x, y, label, methods, settings, seed)
    else:
        _need(method, len(y))
        scores = {}
    model = fit(method, base, x, y, label, settings, seed)
    return model, {'method': method, 'rows': len(y), 'cv': scores, 'label': label}


def describe(model, base_meta, df, report, base_name, base_dir, tables):
    """The adapted LPM's metadata: the new table's target, the base it came from, how."""
    desc = df.attrs.get('target_description') or {'target': str(df['target'].iloc[0]),
                                                 'setting': str(df['setting'].iloc[0])}
    return {**model.metadata, 'target': desc['target'], 'setting': desc['setting'], 'target_description': desc,
            'recipe': dataclasses.asdict(model.recipe), 'scaling': model.scaling, 'label': model.label,
            'epochs_run': None,
            'data': {'tables': tables, 'rows': len(df),
                     'sha256': dataset.data_hash(df, with_reference=model.label['kind'] == 'normalised')},
            'adapted_from': {'name': base_name, 'dir': base_dir, 'target': base_meta.get('target'),
                             'device': base_meta.get('target_description', {}).get('device'),
                             'numeric_format': training.predictor_format(base_meta),
                             'sha256': base_meta.get('data', {}).get('sha256'), 'method': report['method'],
                             'rows': report['rows'], 'cv': report['cv']}}


def adapt_and_save(base_name_or_dir, tables, model_dirs, method='auto', seed=0, overwrite=False,
                   force_format=False):
    """The whole of tools.adapt_lpm: the base (a name or a directory; None: the shipped base of the tables'
    numeric format, registry.BASE_OF_FORMAT) adapted on the tables' rows and
    written, with metrics.json (the cross-validated scores), to each of model_dirs. Every check comes
    before any work and a refusal writes nothing; --overwrite replaces the LPM outputs of a directory and
    nothing else in it (training.OUTPUTS). Returns (the adapted LPM, its report)."""
    for path in model_dirs:
        training.check_output_dir(path, overwrite)
    df = dataset.load_tables(tables)
    base = registry.load(base_name_or_dir or registry.BASE_OF_FORMAT[training.format_of(df)])
    for path in model_dirs:
        training.check_same_format(path, df, force_format)
    model, report = adapt(base, df, method, seed=seed, force_format=force_format)
    model.metadata = describe(model, base.metadata, df, report, registry.name_of(base.path), portable(base.path),
                              [portable(t) for t in tables])
    best = report['cv'].get(report['method'], {})
    scores = {'scored_by': 'cross-validation' if best else None, 'method': report['method'],
              'rows': report['rows'], **best, 'cv': report['cv']}
    with contextlib.ExitStack() as stack:  # every directory swapped in only once all are written
        first, *copies = [stack.enter_context(training.staged(path)) for path in model_dirs]
        model.save(first)
        run_dir.write_json(os.path.join(first, lpm.METRICS_FILE), training.json_safe(scores))
        for copy in copies:
            shutil.copytree(first, copy, dirs_exist_ok=True)
    return model, report


# ---- which architectures to time on a new device ----

def calibration_genotypes(base, n, seed=0, pool=None):
    """n architectures spread over the base's predicted latency range: a pool of random genotypes
    predicted, cut into n equal-count bins, one drawn per bin; DARTS_V2 stands for its own bin."""
    if n < 1:
        raise AdaptError(f'need at least 1 calibration architecture, got {n}')
    rng = np.random.default_rng(seed)
    pool = pool or max(2000, 50 * n)
    sampled = [search_space.sample_genotype(rng) for _ in range(pool)]
    reference = genotypes.DARTS_V2
    predicted = base.predict_ms(np.stack([genotype_encoding(g, base.cells) for g in sampled]))
    edges = np.quantile(predicted, np.linspace(0, 1, n + 1)[1:-1])
    bins = np.searchsorted(edges, predicted)
    ref_bin = int(np.searchsorted(edges, base.predict_ms(genotype_encoding(reference, base.cells)[None])[0]))
    chosen = [reference]
    for b in range(n):
        members = np.flatnonzero(bins == b)
        if b != ref_bin and members.size:
            chosen.append(sampled[int(rng.choice(members))])
    ids, unique = set(), []
    for g in chosen:  # a random draw equal to DARTS_V2 (or each other) is kept once
        if search_space.genotype_id(g) not in ids:
            ids.add(search_space.genotype_id(g))
            unique.append(g)
    return unique
