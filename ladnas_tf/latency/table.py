"""The durable latency table: one CSV row per architecture, appended and fsync'ed as measured.

Beside `name.csv` lies `name.meta.json` (the target and setting the table belongs to, written once).
Each row carries `ref_ms`, the reference network timed around that row (see profile.py).
A killed run loses at most the row in flight (a partial last line is cut off on reopening); a
restart skips measured architectures; a table of another target or setting is refused.
"""
import csv
import json
import os

import pandas as pd

COLUMNS = ('arch_id', 'index', 'normal', 'reduce', 'normal_encoding', 'reduce_encoding', 'params',
           'macs', 'latency_ms', 'mean_ms', 'std_ms', 'iqr_ms', 'cv', 'runs', 'attempts', 'ref_ms',
           'ref_cv', 'target', 'setting', 'measured_at')
# What makes two tables comparable: anything else in the description (versions) may differ.
IDENTITY = ('target', 'setting', 'device', 'threads', 'xnnpack', 'delegate')


class TableError(ValueError):
    """A table that is corrupt, or that belongs to another target or setting."""


def _sidecar(path, suffix):
    return os.path.splitext(path)[0] + suffix


def _append(path, columns, row):
    new = not os.path.exists(path)
    with open(path, 'a', newline='') as f:
        writer = csv.DictWriter(f, columns)
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def _cut_partial_line(path):
    """A kill during a write leaves a last line without its newline: drop just that line."""
    with open(path, 'rb+') as f:
        data = f.read()
        if data and not data.endswith(b'\n'):
            f.truncate(data.rfind(b'\n') + 1)
            return True
    return False


def read(path, columns=COLUMNS):
    """The table as a DataFrame; TableError (one line) when it is not a latency table."""
    try:
        df = pd.read_csv(path, dtype={'arch_id': str, 'normal_encoding': str, 'reduce_encoding': str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise TableError(f'{path}: not a readable CSV table ({str(e).splitlines()[0]})') from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TableError(f'{path}: missing column(s) {", ".join(missing)}')
    bad = df.index[df['latency_ms'].isna() | ~(df['latency_ms'] > 0)].tolist()
    if bad:
        raise TableError(f'{path}: rows {bad[:10]} have a missing or non-positive latency_ms')
    return df


class LatencyTable:
    """Opens (or creates) the table for one target description and setting."""

    def __init__(self, path, description):
        self.path, self.description = path, dict(description)
        self.meta_path = _sidecar(path, '.meta.json')
        self.ids = set()
        if os.path.exists(path):
            self._check_identity()
            if _cut_partial_line(path):
                print(f'{path}: dropped a partial last row left by a killed run')
            self.ids = set(read(path)['arch_id'])
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            tmp = self.meta_path + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(self.description, f, indent=2, sort_keys=True)
            os.replace(tmp, self.meta_path)

    def _check_identity(self):
        try:
            with open(self.meta_path) as f:
                meta = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise TableError(f'{self.path}: its description {self.meta_path} is missing or corrupt '
                             f'({e.__class__.__name__})') from None
        diff = [k for k in IDENTITY if meta.get(k) != self.description.get(k)]
        if diff:
            k = diff[0]
            raise TableError(f'{self.path} was measured with {k}={meta.get(k)!r}, this run has '
                             f'{k}={self.description.get(k)!r}: use another --table')

    def __len__(self):
        return len(self.ids)

    def __contains__(self, arch_id):
        return arch_id in self.ids

    def append(self, row):
        if row['arch_id'] in self.ids:
            raise TableError(f'{self.path}: architecture {row["arch_id"]} is already measured')
        _append(self.path, COLUMNS, row)
        self.ids.add(row['arch_id'])
