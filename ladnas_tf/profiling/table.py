"""The durable latency table: one CSV row per architecture, appended and fsync'ed as measured.

Beside `name.csv` lies `name.meta.json` (the target and setting the table belongs to, written once).
Each row carries `ref_ms`, the reference network timed around that row (see profiler.py).
A killed run loses at most the row in flight (a partial last line is cut off on reopening; a header
cut by a kill during the very first write makes a new table); a restart skips measured architectures;
a table of another target or setting is refused. Every reader (the profiler resuming, dataset.py for
the LPM) validates rows with `check_rows`: finite positive latencies, real cell encodings.
"""
import csv
import json
import os

import numpy as np
import pandas as pd

from ladnas_tf import run_dir, search_space
from ladnas_tf.bad_input import BadInput

COLUMNS = ('arch_id', 'index', 'normal', 'reduce', 'normal_encoding', 'reduce_encoding', 'params',
           'macs', 'latency_ms', 'mean_ms', 'std_ms', 'iqr_ms', 'cv', 'runs', 'attempts', 'ref_ms',
           'ref_cv', 'target', 'setting', 'measured_at')
# The host or serial that timed a row (profiling/fleet.py); tables from before it lack the column and keep
# their columns when resumed (their new rows then name no device).
DEVICE = 'device'
# What makes two tables comparable: anything else in the description (versions) may differ.
# Not `tflite_source` (writer / converter): both give the same file (docs/tflite_writer_equivalence.md),
# so a table begun with the converter resumes with the writer; the change is noted (_note_source).
IDENTITY = ('target', 'setting', 'device', 'threads', 'xnnpack', 'delegate')
# Tables from before the writer have no tflite_source: they were converted.
OLD_SOURCE = 'converter'


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def portable(path):
    """A path as metadata should record it: relative to the repository when inside it, else its base name
    (the data's sha256 names it anyway), so nothing written names this machine's folders."""
    absolute = os.path.abspath(path)
    if os.path.commonpath([absolute, REPO]) == REPO:
        return os.path.relpath(absolute, REPO)
    return os.path.basename(absolute.rstrip(os.sep))



class TableError(BadInput):
    """A table that is corrupt, or that belongs to another target or setting (names the rows at fault)."""


def rows_text(index, limit=5):
    """'rows 3, 7, 9 (+2 more)': data rows as 0-based positions, so the message stays one short line."""
    index = list(index)
    more = f' (+{len(index) - limit} more)' if len(index) > limit else ''
    return f'row{"s" if len(index) > 1 else ""} {", ".join(map(str, index[:limit]))}{more}'


def encoding_errors(strings):
    """Per string, why it is not a genotype's 112-bit cell encoding ('' when it is one)."""
    errors = []
    nodes = [[e for e, (_, j) in enumerate(search_space.EDGES) if j == n]
             for n in range(search_space.NUM_INPUTS, search_space.NUM_INPUTS + search_space.NUM_NODES)]
    ones = search_space.NUM_NODES * search_space.INPUTS_PER_NODE
    for s in strings:
        if not isinstance(s, str) or len(s) != search_space.ENCODING_SIZE or set(s) - {'0', '1'}:
            errors.append(f'not {search_space.ENCODING_SIZE} 0/1 characters')
            continue
        bits = np.frombuffer(s.encode(), np.uint8).reshape(search_space.NUM_EDGES, search_space.NUM_OPS) - 48
        per_edge = bits.sum(axis=1)
        if bits.sum() != ones:
            errors.append(f'{int(bits.sum())} ones instead of {ones}')
        elif bits[:, search_space.PRIMITIVES.index('none')].any():
            errors.append("op 'none' set")
        elif (per_edge > 1).any():
            errors.append('two ops on one edge')
        elif any(per_edge[n].sum() != search_space.INPUTS_PER_NODE for n in nodes):
            errors.append(f'a node without exactly {search_space.INPUTS_PER_NODE} input edges')
        else:
            errors.append('')
    return errors


def _positive(path, df, column):
    values = pd.to_numeric(df[column], errors='coerce').to_numpy(np.float64)
    bad = np.flatnonzero(~(values > 0) | ~np.isfinite(values))
    if bad.size:
        raise TableError(f'{path}: {column} is NaN, infinite, non-numeric or non-positive at {rows_text(bad)}')
    df[column] = values


def check_rows(path, df):
    """Refuses rows no reader can use: a latency (and ref_ms, where the column exists) that is not a finite
    positive number, or a cell encoding that is not a genotype's. Converts those columns to float."""
    _positive(path, df, 'latency_ms')
    if 'ref_ms' in df.columns:
        _positive(path, df, 'ref_ms')
    for column in ('normal_encoding', 'reduce_encoding'):
        errors = encoding_errors(df[column].tolist())
        bad = [k for k, e in enumerate(errors) if e]
        if bad:
            raise TableError(f'{path}: malformed {column} at {rows_text(bad)} ({errors[bad[0]]})')


def _sidecar(path, suffix):
    return os.path.splitext(path)[0] + suffix


def append_row(path, columns, row):
    """Appends one row to a CSV file (its header first when the file is new), on disk when this returns."""
    new = not os.path.exists(path)
    with open(path, 'a', newline='') as f:
        writer = csv.DictWriter(f, columns)
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def _cut_partial_line(path):
    """A kill during a write leaves a last line without its newline: drop just that line. Returns
    whether the file still has its complete header (a kill during the first write may cut it)."""
    with open(path, 'rb+') as f:
        data = f.read()
        if data and not data.endswith(b'\n'):
            f.truncate(data.rfind(b'\n') + 1)
            print(f'{path}: dropped a partial last row left by a killed run')
        return b'\n' in data


def read(path, columns=COLUMNS):
    """The table as a DataFrame, its rows checked (check_rows); TableError (one line) when it is not a
    latency table."""
    try:
        df = pd.read_csv(path, dtype={'arch_id': str, 'normal_encoding': str, 'reduce_encoding': str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise TableError(f'{path}: not a readable CSV table ({str(e).splitlines()[0]})') from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TableError(f'{path}: missing column(s) {", ".join(missing)}')
    check_rows(path, df)
    return df


class LatencyTable:
    """Opens (or creates) the table for one target description and setting."""

    def __init__(self, path, description):
        self.path, self.description = path, dict(description)
        self.meta_path = _sidecar(path, '.meta.json')
        self.ids, self.columns = set(), COLUMNS + (DEVICE,)
        if os.path.exists(path) and self._header_complete():
            meta = self._check_identity()
            rows = read(path)
            self.ids, self.columns = set(rows['arch_id']), tuple(rows.columns)
            self._note_source(meta)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._write_meta(self.description)

    def _write_meta(self, meta):
        run_dir.write_json(self.meta_path, meta, sort_keys=True)

    def _note_source(self, meta):
        """A run with another tflite_source than the table's last appends {tflite_source, from_row} to the
        metadata's `tflite_source_changes`, so every row's source stays known."""
        source = self.description.get('tflite_source')
        changes = meta.get('tflite_source_changes', [])
        last = changes[-1]['tflite_source'] if changes else meta.get('tflite_source', OLD_SOURCE)
        if source is not None and source != last:
            changes.append({'tflite_source': source, 'from_row': len(self.ids)})
            self._write_meta({**meta, 'tflite_source_changes': changes})

    def _header_complete(self):
        """False for a file whose header a kill cut short (it is then removed): the table is new."""
        if _cut_partial_line(self.path):
            return True
        print(f'{self.path}: a header cut by a killed first write; starting the table anew')
        os.remove(self.path)
        return False

    def _check_identity(self):
        try:
            with open(self.meta_path) as f:
                meta = json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TableError(f'{self.path}: its description {self.meta_path} is missing or corrupt '
                             f'({e.__class__.__name__})') from None
        if not isinstance(meta, dict):
            raise TableError(f'{self.path}: its description {self.meta_path} is not a JSON object')
        diff = [k for k in IDENTITY if meta.get(k) != self.description.get(k)]
        if diff:
            k = diff[0]
            raise TableError(f'{self.path} was measured with {k}={meta.get(k)!r}, this run has '
                             f'{k}={self.description.get(k)!r}: use another --table')
        from ladnas_tf.profiling.targets.base import numeric_format  # float32 and int8 rows never share a table
        if numeric_format(meta) != numeric_format(self.description):
            raise TableError(f'{self.path} holds {numeric_format(meta)} latencies, this run times '
                             f'{numeric_format(self.description)} files: use another --table')
        return meta

    def __len__(self):
        return len(self.ids)

    def __contains__(self, arch_id):
        return arch_id in self.ids

    def append(self, row):
        if row['arch_id'] in self.ids:
            raise TableError(f'{self.path}: architecture {row["arch_id"]} is already measured')
        append_row(self.path, self.columns, {k: v for k, v in row.items() if k in self.columns})
        self.ids.add(row['arch_id'])
