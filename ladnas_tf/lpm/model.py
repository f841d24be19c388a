"""The latency prediction module (LPM, paper section 3.2): encoded cell -> predicted latency (ms).

The paper's regressor is an MLP 112 -> 256 -> 64 -> 1 with sigmoid hidden units, trained with momentum
SGD on (architecture, latency) pairs measured on one target. Here it is trained from latency tables
(one CSV row per profiled architecture, read by dataset.py), saved with the metadata that makes it safe
to reuse (target, search-space signature, encoded cells, target scaling, recipe, data hash), and called
in two ways: `predict_ms` on numpy bits, and `lpm(tensor)` on relaxed float encodings, differentiably,
for the search.

Besides the paper's MLP (architecture 'mlp'), a small graph network over each cell's DAG ('gnn') and
two linear regressors, fitted exactly (least squares with
an L2 penalty) rather than by SGD: 'linear' on the bits, and 'positional', nn-Meter's sum of kernel costs
in the search space's terms: each operation's cost depends on its cell type (normal / reduction, so its
stride) and on where its input comes from (cell input c_{k-2}, c_{k-1} or an intermediate node); a
fixed 0/1 matrix sums the bits into those 2 x 3 x 8 counts. Under log target scaling the costs multiply.
Which regressor ranks a device best is measured, not assumed (docs/lpm_cpu_int8.md).

The label is the measured latency, or (label 'normalised') the latency with the machine's load taken out:
latency_ms / ref_ms * median(ref_ms of the training rows), where ref_ms is the reference network timed
around each row. Either way predictions are in ms; the normalised ones at the table's typical load.
"""
import dataclasses
import hashlib
import json
import math
import os

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from ladnas_tf import search_space
from ladnas_tf.bad_input import BadInput
from ladnas_tf.lpm.dataset import (CELLS, data_hash, encodings, genotype_encoding, normalised_latency,
                                   reference_median)
from ladnas_tf.profiling.table import IDENTITY
from ladnas_tf.settings import option

FORMAT = 'ladnas_tf.lpm/1'
MODEL_FILE = 'lpm.keras'
METADATA_FILE = 'metadata.json'
METRICS_FILE = 'metrics.json'  # how well it predicts (lpm.training, lpm.adapt write it)
HIDDEN_UNITS = (256, 64)
OPTIMIZERS = ('sgd', 'adam')
LOSSES = ('mse', 'mae', 'huber')
TARGET_SCALINGS = ('none', 'standard', 'log')
LABELS = ('latency', 'normalised')
ARCHITECTURES = ('mlp', 'linear', 'positional', 'gnn')
# Where an edge's input comes from: c_{k-2}, c_{k-1}, or an intermediate node (positional counts).
SOURCES = ('input0', 'input1', 'intermediate')
FIXED_LAYERS = ('positions', 'op_counts')  # layers no training changes (fixed 0/1 count matrices)
# Every regressor's output layer ends in '_out' (few-shot fine-tuning trains it alone).


class LPMError(BadInput):
    """Base of every LPM error: a one-line message naming the problem."""


class LPMMismatchError(LPMError):
    """A saved LPM that does not fit the search space, input size or target it is loaded for."""


# ---- training recipe ----

@dataclasses.dataclass(frozen=True)
class LPMRecipe:
    """How an LPM is built and trained. The defaults are the paper's (section 3.2, Training details)."""
    optimizer: str = option('sgd', 'Optimizer.', choices=OPTIMIZERS)
    lr: float = option(0.01, 'Learning rate (fixed).')
    momentum: float = option(0.9, 'SGD momentum.')
    weight_decay: float = option(1e-5, 'Coupled L2 weight decay (PyTorch convention: grad += weight_decay * w).')
    batch_size: int = option(200, 'Batch size.')
    epochs: int = option(1000, 'Epochs (maximum, with early stopping).')
    loss: str = option('mse', 'Loss on the (scaled) target.', choices=LOSSES)
    target_scaling: str = option('none', 'none: raw ms (paper); standard: (ms - mean) / std; log: standardised '
                                 'log(ms).', choices=TARGET_SCALINGS)
    patience: int = option(0, 'Early-stopping patience in epochs on the validation loss (0 = off).')
    val_fraction: float = option(0.0, 'Share of training rows held out for early stopping.')
    cells: str = option('normal', 'normal: 112 bits (paper); both: normal + reduction cell, 224 bits.',
                        choices=tuple(CELLS), flag='encode_cells')
    ensemble: int = option(1, 'Independently initialised members averaged in ms.')
    label: str = option('latency', 'latency: measured latency_ms (paper); normalised: latency_ms / ref_ms * '
                        'median(training ref_ms), the load taken out; predictions stay in ms.', choices=LABELS)
    seed: int = option(0, 'Seed of weight initialisation and shuffling.')
    architecture: str = option('mlp', 'mlp: the paper\'s 256-64 MLP; linear: least squares on the bits; '
                               'positional: least squares on operation counts by cell type and input source '
                               '(nn-Meter-style kernel costs); gnn: a graph network over each cell\'s DAG. The '
                               'linear ones are fitted exactly, with weight_decay as the L2 penalty per row.',
                               choices=ARCHITECTURES)

    @property
    def linear(self):
        """Fitted in closed form rather than by SGD."""
        return self.architecture in ('linear', 'positional')

    def __post_init__(self):
        for name, allowed in (('optimizer', OPTIMIZERS), ('loss', LOSSES),
                              ('target_scaling', TARGET_SCALINGS), ('cells', tuple(CELLS)),
                              ('label', LABELS), ('architecture', ARCHITECTURES)):
            if getattr(self, name) not in allowed:
                raise LPMError(f'{name} must be one of {", ".join(allowed)}, got {getattr(self, name)!r}')
        for name in ('batch_size', 'epochs', 'ensemble'):
            if getattr(self, name) < 1:
                raise LPMError(f'{name} must be >= 1, got {getattr(self, name)}')
        if not (self.lr > 0 and 0 <= self.momentum < 1 and self.weight_decay >= 0 and self.patience >= 0):
            raise LPMError('need lr > 0, 0 <= momentum < 1, weight_decay >= 0, patience >= 0')
        if not 0 <= self.val_fraction < 1:
            raise LPMError(f'val_fraction must be in [0, 1), got {self.val_fraction}')
        if self.patience and not self.val_fraction:
            raise LPMError('early stopping (patience > 0) needs val_fraction > 0')
        if self.architecture != 'mlp' and self.ensemble != 1:
            raise LPMError(f'ensemble is for the mlp only: a {self.architecture} LPM takes ensemble 1, '
                           f'got {self.ensemble}')


PAPER_RECIPE = LPMRecipe()


def build_regressor(input_size, ensemble=1, weight_decay=0.0, seed=0):
    """The paper's MLP (input -> 256 sigmoid -> 64 sigmoid -> 1 linear), `ensemble` times side by side.

    Output [n, ensemble], in the scaled target units. Members share the input only, so training them
    on the summed loss trains each one on its own loss.
    """
    # Keras's L2 adds l2 * sum(w^2), whose gradient is 2 * l2 * w: halve to get PyTorch's weight decay.
    reg = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    x = keras.Input((input_size,), name='encoding')
    outputs = []
    for k in range(ensemble):
        h = x
        for depth, units in enumerate(HIDDEN_UNITS + (1,)):
            last = depth == len(HIDDEN_UNITS)
            h = keras.layers.Dense(
                units, activation=None if last else 'sigmoid', kernel_regularizer=reg, bias_regularizer=reg,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1000 + 10 * k + depth),
                name=f'm{k}_{"out" if last else f"hidden{depth + 1}"}')(h)
        outputs.append(h)
    y = outputs[0] if ensemble == 1 else keras.layers.Concatenate(name='members')(outputs)
    return keras.Model(x, y, name='lpm')


def positional_matrix(cells):
    """[112 * cells, 8 * 3 * cells] 0/1: bit (edge, op) of a cell -> count (cell, input source, op)."""
    per_cell = np.zeros((search_space.NUM_EDGES, search_space.NUM_OPS, len(SOURCES), search_space.NUM_OPS),
                        np.float32)
    for e, (i, _) in enumerate(search_space.EDGES):
        source = min(i, 2)  # 0 and 1 are the cell's inputs, the rest intermediate nodes
        for op in range(search_space.NUM_OPS):
            per_cell[e, op, source, op] = 1
    per_cell = per_cell.reshape(search_space.ENCODING_SIZE, -1)
    n = len(CELLS[cells])
    return np.kron(np.eye(n, dtype=np.float32), per_cell)


def op_count_matrix(cells):
    """[112 * cells, 8 * cells] 0/1: bit (edge, op) of a cell -> how often the op occurs in that cell."""
    per_cell = np.tile(np.eye(search_space.NUM_OPS, dtype=np.float32), (search_space.NUM_EDGES, 1))
    return np.kron(np.eye(len(CELLS[cells]), dtype=np.float32), per_cell)


def ridge(features, y, l2, row_weights=None):
    """(weights, bias) of least squares with an L2 penalty `l2` (one, or one per feature) on the weights,
    none on the bias; each row's squared error weighted by row_weights (default 1)."""
    s = np.ones(len(y)) if row_weights is None else row_weights
    mean_f, mean_y = s @ features / s.sum(), s @ y / s.sum()
    centred = features - mean_f
    gram = centred.T @ (s[:, None] * centred) + np.diag(np.broadcast_to(l2, features.shape[1:]))
    w = np.linalg.lstsq(gram, centred.T @ (s * (y - mean_y)), rcond=None)[0]
    return w, mean_y - mean_f @ w


def build_linear(input_size, cells, positional):
    """Bits (-> fixed positional counts) -> one linear unit; its weights are set by LPM._fit_exactly."""
    x = keras.Input((input_size,), name='encoding')
    h = x
    if positional:
        counts = keras.layers.Dense(len(CELLS[cells]) * len(SOURCES) * search_space.NUM_OPS, use_bias=False,
                                    trainable=False, name=FIXED_LAYERS[0])
        h = counts(h)
        counts.set_weights([positional_matrix(cells)])
    y = keras.layers.Dense(1, kernel_initializer='zeros', name='costs_out')(h)
    return keras.Model(x, y, name='lpm')


def build_cell_gnn(cells, units=32):
    """A graph network over each cell's DAG: the two input nodes start from learned states; an
    intermediate node sums the messages Dense([source state, op bits]) of its chosen edges (an edge's
    message is scaled by its non-`none` bits, so relaxed encodings weigh it); a cell's readout sums its
    intermediate states; both readouts -> 64 relu -> 1."""
    size = search_space.ENCODING_SIZE
    x = keras.Input((size * len(CELLS[cells]),), name='encoding')
    one = keras.ops.ones_like(x[:, :1])
    readouts = []
    for c, cell in enumerate(CELLS[cells]):
        bits = keras.layers.Reshape((search_space.NUM_EDGES, search_space.NUM_OPS))(x[:, c * size:(c + 1) * size])
        message = keras.layers.Dense(units, activation='relu', name=f'{cell}_message')
        states = [keras.layers.Dense(units, use_bias=False, name=f'{cell}_input{i}')(one)
                  for i in range(search_space.NUM_INPUTS)]
        for j in range(search_space.NUM_INPUTS, search_space.NUM_INPUTS + search_space.NUM_NODES):
            states.append(keras.layers.Add()([
                keras.ops.sum(bits[:, e, 1:], axis=-1, keepdims=True)
                * message(keras.layers.Concatenate()([states[i], bits[:, e]]))
                for e, (i, k) in enumerate(search_space.EDGES) if k == j]))
        readouts.append(keras.layers.Add(name=f'{cell}_readout')(states[search_space.NUM_INPUTS:]))
    h = readouts[0] if len(readouts) == 1 else keras.layers.Concatenate()(readouts)
    h = keras.layers.Dense(64, activation='relu', name='hidden')(h)
    return keras.Model(x, keras.layers.Dense(1, name='gnn_out')(h), name='lpm')


def build(recipe, input_size):
    """The untrained regressor of a recipe."""
    if recipe.linear:
        return build_linear(input_size, recipe.cells, recipe.architecture == 'positional')
    if recipe.architecture == 'gnn':
        keras.utils.set_random_seed(recipe.seed)
        return build_cell_gnn(recipe.cells)
    return build_regressor(input_size, recipe.ensemble, recipe.weight_decay, recipe.seed)


def _member_loss(kind):
    """Per-sample loss summed over ensemble members (y_true [n, 1] broadcasts over [n, K])."""
    def loss(y_true, y_pred):
        err = y_pred - keras.ops.cast(y_true, y_pred.dtype)
        if kind == 'mse':
            per = keras.ops.square(err)
        elif kind == 'mae':
            per = keras.ops.abs(err)
        else:  # huber, delta 1 (in scaled units)
            a = keras.ops.abs(err)
            per = keras.ops.where(a <= 1.0, 0.5 * keras.ops.square(err), a - 0.5)
        return keras.ops.sum(per, axis=-1)
    loss.__name__ = f'member_{kind}'
    return loss


def _optimizer(recipe):
    if recipe.optimizer == 'sgd':
        return keras.optimizers.SGD(recipe.lr, momentum=recipe.momentum)
    return keras.optimizers.Adam(recipe.lr)


class _EpochProgress(keras.callbacks.Callback):
    """One progress bar over epochs (not a line per epoch), showing the latest losses."""

    def __init__(self, epochs):
        super().__init__()
        self.bar = keras.utils.Progbar(epochs, interval=0.5, unit_name='epoch',
                                       stateful_metrics=('loss', 'val_loss'))
        self.done = 0

    def on_epoch_end(self, epoch, logs=None):
        self.done = epoch + 1
        values = [(k, v) for k, v in (logs or {}).items() if k in ('loss', 'val_loss')]
        self.bar.update(self.done, values, finalize=False)

    def on_train_end(self, logs=None):
        self.bar.update(self.done, finalize=True)  # early stopping ends short of the target


class LPM:
    """A trained (or trainable) latency predictor for one target, with its metadata."""

    def __init__(self, recipe=PAPER_RECIPE, regressor=None, metadata=None):
        self.recipe = recipe
        self.input_size = search_space.ENCODING_SIZE * len(CELLS[recipe.cells])
        self.regressor = regressor or build(recipe, self.input_size)
        # Frozen outside train(): a search that tracks the regressor must neither update its weights
        # nor pick up its weight-decay losses.
        self.regressor.trainable = False
        self.metadata = metadata or {}
        self.scaling = self.metadata.get('scaling', {'kind': 'none', 'mean': 0.0, 'std': 1.0})
        self.label = self.metadata.get('label', {'kind': 'latency'})
        self.path = None  # the directory it was loaded from

    @property
    def target_description(self):
        """The device its table was measured on."""
        return target_description(self.metadata)

    @property
    def sha256(self):
        """content_sha256 of the directory it was loaded from (None for one built in memory)."""
        return None if self.path is None else content_sha256(self.path)

    @property
    def cells(self):
        return self.recipe.cells

    # -- target scaling: the regressor works in scaled units, callers always see ms --
    def scaled(self, ms):
        y = np.log(ms) if self.scaling['kind'] == 'log' else np.asarray(ms, np.float64)
        return ((y - self.scaling['mean']) / self.scaling['std']).astype(np.float32)

    def _unscale(self, y):
        y = y * self.scaling['std'] + self.scaling['mean']
        return keras.ops.exp(y) if self.scaling['kind'] == 'log' else y

    def fit_scaling(self, ms):
        kind = self.recipe.target_scaling
        if kind == 'none':
            self.scaling = {'kind': 'none', 'mean': 0.0, 'std': 1.0}
            return
        y = np.log(ms) if kind == 'log' else ms
        self.scaling = {'kind': kind, 'mean': float(np.mean(y)), 'std': float(np.std(y)) or 1.0}

    def label_ms(self, df):
        """The label of rows in ms, as this LPM is trained on it (and predicts it)."""
        if self.label['kind'] == 'normalised':
            return normalised_latency(df, self.label['ref_median_ms'])
        return df['latency_ms'].to_numpy(np.float64)

    def train(self, train_df, val_df=None, callbacks=(), progress=True):
        """Fits on a latency table's rows (val_df: early-stopping rows); returns the Keras History."""
        r = self.recipe
        if len(train_df) == 0:
            raise LPMError('no training rows')
        if r.patience and (val_df is None or len(val_df) == 0):
            raise LPMError('early stopping needs validation rows')
        self.label = ({'kind': 'normalised', 'ref_median_ms': reference_median(train_df),
                       'reference': (train_df.attrs.get('target_description') or {}).get('reference')}
                      if r.label == 'normalised' else {'kind': 'latency'})
        self.fit_scaling(self.label_ms(train_df))
        if r.linear:
            return self._fit_exactly(train_df)
        # One graph execution per epoch: Keras's per-step overhead would otherwise dominate this tiny MLP.
        steps = math.ceil(len(train_df) / r.batch_size)
        self.regressor.trainable = True
        self.regressor.compile(optimizer=_optimizer(r), loss=_member_loss(r.loss), steps_per_execution=steps)
        cbs = [keras.callbacks.TerminateOnNaN(), *callbacks]
        if r.patience:
            cbs.append(keras.callbacks.EarlyStopping('val_loss', patience=r.patience,
                                                     restore_best_weights=True))
        if progress:
            cbs.append(_EpochProgress(r.epochs))
        has_val = val_df is not None and len(val_df) > 0
        history = self.regressor.fit(
            self._dataset(train_df, True), epochs=r.epochs, verbose=0, callbacks=cbs, shuffle=False,
            validation_data=self._dataset(val_df, False) if has_val else None)
        losses = history.history.get('loss', [])
        if not losses or not math.isfinite(losses[-1]):
            raise LPMError(f'training diverged (loss {losses[-1] if losses else None} after {len(losses)} '
                           'epochs); lower lr or use target_scaling standard|log')
        self.metadata = self._describe(train_df, val_df, len(losses))
        self.regressor.trainable = False
        return history

    def _fit_exactly(self, train_df):
        """Least squares of the linear head with weight_decay * rows as the L2 penalty (bias free);
        no epochs, no early stopping: validation rows, if any, are not needed."""
        features = self.regressor.layers[-1].input
        head = keras.Model(self.regressor.input, features)
        f = np.asarray(head.predict(encodings(train_df, self.cells), verbose=0), np.float64)
        y = self.scaled(self.label_ms(train_df)).astype(np.float64)
        w, bias = ridge(f, y, self.recipe.weight_decay * len(f))
        self.regressor.layers[-1].set_weights([w[:, None].astype(np.float32), np.array([bias], np.float32)])
        self.metadata = self._describe(train_df, None, 0)
        return None

    def _dataset(self, df, shuffle):
        x = encodings(df, self.cells)
        y = self.scaled(self.label_ms(df))[:, None]
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(len(df), seed=self.recipe.seed, reshuffle_each_iteration=True)
        return ds.batch(self.recipe.batch_size).prefetch(2)

    def _describe(self, train_df, val_df, epochs_run):
        fit_rows = pd.concat([train_df, val_df]) if val_df is not None else train_df
        desc = train_df.attrs.get('target_description') or {
            'target': str(train_df['target'].iloc[0]), 'setting': str(train_df['setting'].iloc[0])}
        return {
            'format': FORMAT,
            'target': desc['target'],
            'setting': desc['setting'],
            'target_description': desc,
            'signature': search_space.signature(),
            'cells': self.cells,
            'input_size': self.input_size,
            'scaling': self.scaling,
            'label': self.label,
            'recipe': dataclasses.asdict(self.recipe),
            'epochs_run': epochs_run,
            'data': {'tables': train_df.attrs.get('tables', []),
                     'train_rows': len(train_df), 'val_rows': 0 if val_df is None else len(val_df),
                     'sha256': data_hash(fit_rows, with_reference=self.label['kind'] == 'normalised')},
            'keras_version': keras.__version__,
        }

    # -- prediction --
    def __call__(self, encodings_tensor):
        """Predicted latency (ms), shape [n], of float encodings [n, input_size]; differentiable, so
        relaxed (non-binary) encodings get d(latency)/d(encoding) under tf.GradientTape."""
        x = keras.ops.convert_to_tensor(encodings_tensor, 'float32')
        if x.shape.rank != 2 or x.shape[-1] != self.input_size:
            raise LPMError(f'LPM input must be [n, {self.input_size}] ({self.cells} cell encoding), '
                           f'got {x.shape}')
        return keras.ops.mean(self._unscale(self.regressor(x, training=False)), axis=-1)

    def predict_genotypes(self, genotypes):
        """Predicted latency (ms) [n] of discrete genotypes, encoded as this LPM reads them."""
        return self.predict_ms(np.stack([genotype_encoding(g, self.cells) for g in genotypes]))

    def predict_ms(self, encodings_array, batch_size=65536):
        """Predicted latency (ms) [n] of encodings [n, input_size] (0/1 or relaxed)."""
        x = np.asarray(encodings_array, np.float32)
        if x.ndim == 1:
            x = x[None]
        return np.concatenate([keras.ops.convert_to_numpy(self(x[i:i + batch_size]))
                               for i in range(0, max(len(x), 1), batch_size)]).astype(np.float64)

    # -- persistence --
    def save(self, model_dir):
        if not self.metadata:
            raise LPMError('cannot save an untrained LPM')
        os.makedirs(model_dir, exist_ok=True)
        self.regressor.save(os.path.join(model_dir, MODEL_FILE))
        with open(os.path.join(model_dir, METADATA_FILE), 'w') as f:
            json.dump(self.metadata, f, indent=2, sort_keys=True)

    @classmethod
    def load(cls, model_dir, expected_signature=None, target=None, setting=None):
        """Loads an LPM, refusing one trained for another search space, encoding, input size or target.

        expected_signature defaults to this code's search space; target is a name or a description
        dict (its identifying keys, table.IDENTITY, are compared); setting is compared when given.
        """
        meta = read_metadata(model_dir)
        if meta.get('format') != FORMAT:
            raise LPMMismatchError(f'{model_dir}: format {meta.get("format")!r}, expected {FORMAT!r}')
        _check_signature(model_dir, meta.get('signature'), expected_signature or search_space.signature())
        try:
            recipe = LPMRecipe(**meta['recipe'])
        except (KeyError, TypeError) as e:
            raise LPMMismatchError(f'{model_dir}: recipe in metadata not understood ({e})') from None
        size = search_space.ENCODING_SIZE * len(CELLS[recipe.cells])
        if meta.get('label', {'kind': 'latency'}).get('kind') != recipe.label or (
                recipe.label == 'normalised' and not meta['label'].get('ref_median_ms', 0) > 0):
            raise LPMMismatchError(f'{model_dir}: label {meta.get("label")!r} does not match the recipe\'s '
                                   f'{recipe.label!r}')
        if meta.get('cells') != recipe.cells or meta.get('input_size') != size:
            raise LPMMismatchError(f'{model_dir}: input size {meta.get("input_size")} '
                                   f'({meta.get("cells")} cells) does not fit this space\'s {size} bits '
                                   f'for {recipe.cells} cells')
        _check_target(model_dir, meta, target, setting)
        regressor = _load_regressor(os.path.join(model_dir, MODEL_FILE))
        if regressor.input_shape[-1] != size:
            raise LPMMismatchError(f'{model_dir}: model input size {regressor.input_shape[-1]} '
                                   f'!= metadata {size}')
        loaded = cls(recipe, regressor, meta)
        loaded.path = model_dir
        return loaded


def content_sha256(model_dir):
    """SHA-256 of an LPM directory's metadata and model: a resumed search must keep its predictor, and a
    path alone does not say that the file behind it is the same."""
    h = hashlib.sha256()
    for name in (METADATA_FILE, MODEL_FILE):
        with open(os.path.join(model_dir, name), 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                h.update(chunk)
    return h.hexdigest()


def read_metadata(model_dir):
    """An LPM directory's metadata.json, checked for the keys every reader needs (no model loaded)."""
    meta_file = os.path.join(model_dir, METADATA_FILE)
    if not os.path.isdir(model_dir):
        what = 'a file' if os.path.exists(model_dir) else 'missing'
        raise LPMError(f'{model_dir}: not an LPM directory ({what})')
    try:
        with open(meta_file) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise LPMError(f'{model_dir}: no {METADATA_FILE}, not an LPM directory') from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, IsADirectoryError) as e:
        raise LPMError(f'{meta_file}: unreadable ({e.__class__.__name__}: {str(e)[:100]})') from None
    _check_metadata(meta_file, meta)
    return meta


def target_description(meta):
    """The device an LPM's table was measured on, from its metadata (older LPMs name the target only)."""
    return meta.get('target_description') or {'target': meta['target']}


# What metadata.json must hold, and of which JSON type, before any of it is believed.
_METADATA_TYPES = {'format': str, 'signature': dict, 'recipe': dict, 'cells': str, 'input_size': int,
                   'label': dict, 'scaling': dict, 'target': str, 'setting': str}


def _check_metadata(meta_file, meta):
    """One line naming the first key of metadata.json that is missing or of the wrong kind."""
    if not isinstance(meta, dict):
        raise LPMError(f'{meta_file}: expected a JSON object, got a JSON {type(meta).__name__}')
    for key, kind in _METADATA_TYPES.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise LPMError(f'{meta_file}: {key!r} is missing or not a JSON {kind.__name__}')
    if 'target_description' in meta and not isinstance(meta['target_description'], dict):
        raise LPMError(f'{meta_file}: \'target_description\' is not a JSON object')
    label, scaling = meta['label'], meta['scaling']
    if label.get('kind') not in LABELS or (label['kind'] == 'normalised'
                                           and not _finite_positive(label.get('ref_median_ms'))):
        raise LPMError(f'{meta_file}: label {label!r} is not a latency or normalised label')
    if (scaling.get('kind') not in TARGET_SCALINGS or not _finite(scaling.get('mean'))
            or not _finite_positive(scaling.get('std'))):
        raise LPMError(f'{meta_file}: scaling {scaling!r} needs a kind of {", ".join(TARGET_SCALINGS)}, '
                       'a finite mean and a positive std')


def _finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _finite_positive(x):
    return _finite(x) and x > 0


def _load_regressor(path):
    if not os.path.isfile(path):
        raise LPMError(f'{path}: missing: the LPM directory has metadata but no model')
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 (Keras raises many kinds for a damaged archive)
        raise LPMError(f'{path}: not a readable Keras model ({e.__class__.__name__})') from None


def _check_signature(model_dir, saved, expected):
    if saved == expected:
        return
    if not isinstance(saved, dict):
        raise LPMMismatchError(f'{model_dir}: no search-space signature in metadata')
    keys = sorted(set(saved) | set(expected))
    diff = [k for k in keys if saved.get(k) != expected.get(k)]
    raise LPMMismatchError(f'{model_dir}: trained for another search space ({", ".join(diff)} differ)')


def _check_target(model_dir, meta, target, setting):
    wanted = {}
    if isinstance(target, dict):  # a full target description: compare what identifies a target
        saved = meta.get('target_description', {})
        wanted = {k: target[k] for k in IDENTITY if k in target and (k in saved or k in meta)}
    elif target is not None:
        wanted['target'] = target
    if setting is not None:
        wanted['setting'] = setting
    for key, value in wanted.items():
        have = meta[key] if key in meta else meta.get('target_description', {}).get(key)
        if have != value:
            raise LPMMismatchError(f'{model_dir}: trained for {key} {have!r}, not {value!r}')
