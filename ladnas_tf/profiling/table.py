"""The durable latency table: one CSV row per architecture, appended and fsync'ed as measured.

Beside `name.csv` lies `name.meta.json` (the target and setting the table belongs to, written once).
Each row carries `ref_ms`, the reference network timed around that row (see profiler.py).
A killed run loses at most the row in flight: a last line without its newline is a partial row, which
every reader ignores and the profiler cuts off when it resumes the table (after checking that the table is
its own: a refusal changes nothing); a header cut by a kill during the very first write makes a new table.
A restart skips measured architectures; a table of another target or setting is refused.

`read` is the one table reader (the profiler resuming, lpm/dataset.py and every tool): it validates rows
with `check_rows` (finite positive latencies, real cell encodings, no blank identifying cell, one target and
setting per table); `description` is the one reader of a table's `.meta.json`.
"""
import csv
import io
import json
import os

import numpy as np
import pandas as pd
from absl import logging

from ladnas_tf import run_dir, search_space
from ladnas_tf.bad_input import BadInput

COLUMNS = ('arch_id', 'index', 'normal', 'reduce', 'normal_encoding', 'reduce_encoding', 'params',
           'macs', 'latency_ms', 'mean_ms', 'std_ms', 'iqr_ms', 'cv', 'runs', 'attempts', 'ref_ms',
           'ref_cv', 'target', 'setting', 'measured_at')
# The host or serial that timed a row (profiling/fleet.py); tables from before it lack the column and keep
# their columns when resumed (their new rows then name no device).
DEVICE = 'device'
# The columns every reader needs (lpm/dataset.py reads tables with these alone); no cell of them is blank.
REQUIRED = ('arch_id', 'normal_encoding', 'reduce_encoding', 'latency_ms', 'target', 'setting')
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


def _header_line(columns):
    text = io.StringIO()
    csv.DictWriter(text, columns).writeheader()
    return text.getvalue().encode()




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


def _complete_part(data):
    """(the bytes up to the last newline, whether a partial last line followed): a kill during a write
    leaves a last line without its newline."""
    end = data.rfind(b'\n') + 1
    return data[:end], end < len(data)


def _cut_partial_line(path):
    """Drops a partial last line from the file itself (the profiler, resuming its own table)."""
    with open(path, 'rb+') as f:
        complete, partial = _complete_part(f.read())
        if partial:
            f.truncate(len(complete))
            print(f'{path}: dropped a partial last row left by a killed run')


def _parse(path, data):
    # Ids, encodings, target and setting are text: read as numbers, '0123' would lose its zero.
    text = {c: str for c in ('arch_id', 'normal_encoding', 'reduce_encoding', 'target', 'setting')}
    try:
        return pd.read_csv(io.BytesIO(data), dtype=text, keep_default_na=False, na_values=[''])
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise TableError(f'{path}: not a readable CSV table ({str(e).splitlines()[0]})') from None


def _check_identifying_cells(path, df):
    """No blank cell among the columns every reader needs; one target and one setting per table."""
    present = [c for c in REQUIRED if c in df.columns]
    blank = np.flatnonzero(df[present].isna().any(axis=1).to_numpy())
    if blank.size:
        empty = [c for c in present if df[c].iloc[blank].isna().any()]
        raise TableError(f'{path}: empty {", ".join(empty)} at {rows_text(blank)}')
    for key in ('target', 'setting'):
        values = df[key].unique() if key in df.columns else ()
        if len(values) > 1:
            raise TableError(f'{path}: mixed {key} values in one table: {", ".join(map(repr, values[:4]))}')


def read(path, columns=COLUMNS):
    """The table as a DataFrame, its rows checked (check_rows) and a partial last row (a killed write)
    left out, the file untouched; TableError (one line) when it is not a latency table with `columns`."""
    if not os.path.isfile(path):
        raise TableError(f'{path}: no such latency table' + (' (a directory)' if os.path.isdir(path) else ''))
    with open(path, 'rb') as f:
        data, partial = _complete_part(f.read())
    if not data:
        raise TableError(f'{path}: no complete header line: not a latency table (or its first write was killed)')
    if partial:
        logging.warning('%s: ignoring a partial last row (no final newline: a killed write)', path)
    df = _parse(path, data)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TableError(f'{path}: missing column(s) {", ".join(missing)}')
    _check_identifying_cells(path, df)
    check_rows(path, df)
    return df


def description_path(path):
    """`<table>.meta.json` beside a table (`t.meta.json`, or `t.csv.meta.json`), or None."""
    for candidate in (_sidecar(path, '.meta.json'), path + '.meta.json'):
        if os.path.exists(candidate):
            return candidate
    return None


def read_description(meta_path):
    """A table's description (its .meta.json) as a dict; TableError in one line when it is unreadable,
    not a JSON object, or of a target this code does not know."""
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise TableError(f'{meta_path}: the table\'s description is missing or corrupt '
                         f'({e.__class__.__name__})') from None
    if not isinstance(meta, dict):
        raise TableError(f'{meta_path}: the table\'s description is not a JSON object')
    check_target(meta, meta_path, TableError)
    return meta


def check_target(description, where, error=TableError):
    """Refuses (one line) a description whose target is not a kind this code knows: a table or a predictor
    of an unknown device says nothing this code can act on, and would be recorded as if it did."""
    from ladnas_tf.profiling.targets.registry import KINDS  # targets import their device code lazily
    target = description.get('target')
    if target not in KINDS:
        raise error(f'{where}: unknown target {target!r} (known: {", ".join(KINDS)})')
    return target


class LatencyTable:
    """Opens (or creates) the table for one target description and setting."""

    def __init__(self, path, description):
        self.path, self.description = path, dict(description)
        self.meta_path = _sidecar(path, '.meta.json')
        self.ids, self.columns = set(), COLUMNS + (DEVICE,)
        if os.path.exists(path) and self._header_complete():
            meta = self._check_identity()
            rows = read(path)  # every check before the one repair below
            self.ids, self.columns = set(rows['arch_id']), tuple(rows.columns)
            _cut_partial_line(path)
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
        """False for a file that is the start of a header a kill cut short (it is then removed): the table
        is new. A file of something else without a line in it is refused, never removed."""
        with open(self.path, 'rb') as f:
            data = f.read()
        if b'\n' in data:
            return True
        if not _header_line(COLUMNS + (DEVICE,)).startswith(data):  # what a new table's first write is
            raise TableError(f'{self.path}: not a latency table (no complete line, and not the start of its header)')
        print(f'{self.path}: a header cut by a killed first write; starting the table anew')
        os.remove(self.path)
        return False

    def _check_identity(self):
        if not os.path.exists(self.meta_path):
            raise TableError(f'{self.path}: its description {self.meta_path} is missing or corrupt (missing)')
        meta = read_description(self.meta_path)
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
