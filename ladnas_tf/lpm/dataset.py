"""Latency tables as training data: one or more tables read, validated and merged into one frame, their
cell encodings as bits, load-normalised labels, a hash naming the rows, deterministic splits.

profiling/table.py writes a table row by row as it is measured and is the one reader of tables (a partial
last row left out, rows validated); this module merges what it reads for the LPM (model.py) and its tools,
and encodes genotypes as the LPM reads them. Splits are decided per
architecture (a hash of arch_id and a seed), so adding rows to a table never moves an existing row from
one side to the other.
"""
import hashlib

import numpy as np
import pandas as pd

from ladnas_tf import search_space
from ladnas_tf.bad_input import BadInput
from ladnas_tf.profiling import table
from ladnas_tf.profiling.table import IDENTITY, TableError, portable, rows_text

REQUIRED_COLUMNS = table.REQUIRED
# The cells an encoding holds, in order: 112 bits (normal) or 224 (normal then reduce).
CELLS = {'normal': ('normal',), 'both': ('normal', 'reduce')}


def _table_description(path, df):
    """The target description: the table's meta.json (table.read_description), checked against the table's
    own columns; without one, the columns' target (which must be known) and setting."""
    desc = {'target': df['target'].iloc[0], 'setting': df['setting'].iloc[0]}
    meta_file = table.description_path(path)
    if meta_file is None:
        table.check_target(desc, path)
        return desc
    meta = table.read_description(meta_file)
    for key in ('target', 'setting'):
        if key in meta and str(meta[key]) != desc[key]:
            raise TableError(f'{meta_file}: {key} {meta[key]!r} disagrees with the table\'s {desc[key]!r}')
    return {**meta, **desc}


def _read(path):
    """One table by the one reader (profiling/table.read: a partial last row is left out), not empty."""
    df = table.read(path, REQUIRED_COLUMNS)
    if df.empty:
        raise TableError(f'{path}: no rows')
    return df, _table_description(path, df)


def load_tables(paths):
    """Reads and validates latency tables into one DataFrame (target description in `.attrs`).

    Refuses what table.read refuses (missing columns, blank cells, NaN or non-positive latencies, malformed
    encodings, mixed targets or settings), an unknown target, tables of different targets or settings, and
    one arch_id with two latencies; exact duplicate rows are kept once.
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    if not paths:
        raise TableError('no latency table given')
    frames, description = [], None
    for path in paths:
        df, desc = _read(path)
        if description is None:
            description = desc
        for key in IDENTITY:
            if desc.get(key) != description.get(key):
                raise TableError(f'mixed {key} values across tables: {description.get(key)!r} in {paths[0]} '
                                 f'vs {desc.get(key)!r} in {path}')
        df['table'] = path
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    latency = df.groupby('arch_id')['latency_ms'].nunique()
    conflicting = latency.index[latency > 1]
    if len(conflicting):
        rows = np.flatnonzero(df['arch_id'].isin(conflicting).to_numpy())
        raise TableError(f'arch_id {conflicting[0]!r} (and {len(conflicting) - 1} more) has different '
                         f'latencies at {rows_text(rows)} (0-based over all tables)')
    df = df.drop_duplicates('arch_id', ignore_index=True)
    df.attrs['target_description'] = description
    df.attrs['tables'] = [portable(p) for p in paths]  # no machine's folders in metadata
    return df


def encodings(df, cells='normal'):
    """float32 [n, 112] (normal) or [n, 224] (normal then reduce) bits of a table's rows."""
    if cells not in CELLS:
        raise BadInput(f'unknown cells {cells!r} (known: {", ".join(CELLS)})')
    parts = [np.frombuffer(''.join(df[f'{c}_encoding']).encode(), np.uint8)
             .reshape(len(df), search_space.ENCODING_SIZE) - 48 for c in CELLS[cells]]
    return np.concatenate(parts, axis=1).astype(np.float32)


def genotype_encoding(genotype, cells='normal'):
    """A discrete genotype's bits as an LPM with `cells` reads them (encodings' layout): [112 * cells]."""
    if cells not in CELLS:
        raise BadInput(f'unknown cells {cells!r} (known: {", ".join(CELLS)})')
    return np.concatenate([search_space.encode_cell(getattr(genotype, c)) for c in CELLS[cells]])


def reference_median(df):
    """Median ref_ms of rows: the typical load that normalised labels are expressed at."""
    return float(np.median(_reference_ms(df)))


def _reference_ms(df):
    if 'ref_ms' not in df.columns:
        raise TableError('no ref_ms column: the normalised label needs the reference network timed per row')
    ref = pd.to_numeric(df['ref_ms'], errors='coerce').to_numpy(np.float64)
    bad = np.flatnonzero(~(ref > 0) | ~np.isfinite(ref))
    if bad.size:
        raise TableError(f'ref_ms is empty, non-numeric or non-positive at {rows_text(bad)} (positions in the split)')
    return ref


def normalised_latency(df, ref_median_ms):
    """latency_ms / ref_ms * ref_median_ms: each row's latency at the reference's typical speed, so a row
    timed while the machine was loaded (its reference slowed down too) is scaled back."""
    return df['latency_ms'].to_numpy(np.float64) / _reference_ms(df) * ref_median_ms


def data_hash(df, with_reference=False):
    """SHA-256 of the rows (id, both encodings, latency[, ref_ms]) in arch_id order: names the training data."""
    h = hashlib.sha256()
    columns = ['arch_id', 'normal_encoding', 'reduce_encoding', 'latency_ms'] + ['ref_ms'] * with_reference
    for row in df.sort_values('arch_id')[columns].itertuples(index=False):
        h.update((','.join(map(str, row[:3])) + ''.join(f',{float(v)!r}' for v in row[3:]) + '\n').encode())
    return h.hexdigest()


# ---- deterministic splits, decided per architecture ----

def _unit_hash(arch_ids, seed, salt):
    """A uniform number in [0, 1) per arch_id: depends on nothing but (salt, seed, arch_id)."""
    return np.array([int.from_bytes(hashlib.sha256(f'{salt}:{seed}:{a}'.encode()).digest()[:8], 'big')
                     for a in arch_ids], np.float64) / 2.0 ** 64


def split(df, seed=0, test_fraction=0.2):
    """(train, test) rows. Each row's side depends only on its arch_id and seed, so adding rows to a
    table never moves an existing row across the split."""
    if not 0 < test_fraction < 1:
        raise BadInput(f'test_fraction must be in (0, 1), got {test_fraction}')
    test = _unit_hash(df['arch_id'], seed, 'test') < test_fraction
    return df[~test], df[test]


def holdout(df, seed=0, fraction=0.1):
    """(fit, validation) rows out of training rows, for early stopping; same per-arch_id rule."""
    val = _unit_hash(df['arch_id'], seed, 'val') < fraction
    return df[~val], df[val]


def first_rows(df, n, seed=0):
    """The n rows that come first in a per-arch_id hash order: nested as n grows, stable as rows are added."""
    if n is None or n <= 0 or n >= len(df):
        return df
    order = np.argsort(_unit_hash(df['arch_id'], seed, 'order'), kind='stable')
    return df.iloc[np.sort(order[:n])]


def split_rows(df, split_seed=0, test_fraction=0.2, max_train_rows=0, val_fraction=0.0):
    """(fit, validation or None, test) rows: the test split never depends on the training size."""
    train, test = split(df, split_seed, test_fraction)
    train = first_rows(train, max_train_rows, split_seed)
    if not val_fraction:
        return train, None, test
    fit, val = holdout(train, split_seed, val_fraction)
    return fit, val, test
