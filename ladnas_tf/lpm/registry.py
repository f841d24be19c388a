"""Named latency predictors: `cpu_tflite_cifar` as well as a directory wherever an LPM is asked for, and
the one way from either to a ready predictor (`load`).

Shipped predictors are the package data `ladnas_tf/predictors/<name>/`, so an installed package
has them wherever it runs from; user predictors are `<LADNAS_LPM_HOME>/<name>/` (default
`~/.ladnas_tf/lpms`), written there by `tools.adapt_lpm --name`. A shipped name cannot be taken by a
user predictor, so a name means the same model on every machine that has the package.

One rule (check_predictor) decides whether a predictor's files can be believed, for the list and for
`load` alike: a broken entry is listed as broken, with why, and refused in one line when asked for.
"""
import importlib.resources
import json
import math
import os
import re

from ladnas_tf.lpm import model as lpm
from ladnas_tf.lpm.model import METRICS_FILE
from ladnas_tf.profiling import table

SHIPPED_PACKAGE = 'ladnas_tf.predictors'
HOME_ENV = 'LADNAS_LPM_HOME'
# The shipped base of each numeric format: what a new device of that format adapts from by default.
BASE_OF_FORMAT = {'float32': 'cpu_tflite_cifar', 'int8': 'cpu_tflite_int8_cifar'}
# Lowercase letters, digits, '_', '-', '.': safe as a folder name on every OS, never a path.
NAME_PATTERN = re.compile(r'[a-z0-9][a-z0-9_.-]{0,63}')


class RegistryError(lpm.LPMError):
    """An unknown or malformed predictor name, or a directory that is not an LPM; one line."""


def user_home():
    """The folder of user predictors; refused in one line when it is something else than a folder."""
    home = os.path.expanduser(os.environ.get(HOME_ENV) or os.path.join('~', '.ladnas_tf', 'lpms'))
    if os.path.exists(home) and not os.path.isdir(home):
        raise RegistryError(f'{home} (${HOME_ENV}, the user predictors\' folder) is a file, not a folder')
    return home


def check_name(name):
    """`name` if it can name a predictor, else RegistryError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name.endswith('.'):
        raise RegistryError(f'{name!r} is not a predictor name (lowercase letters, digits, _ - . ; at most 64, '
                            'starting with a letter or digit)')
    return name


def _is_lpm_dir(path):
    return os.path.isfile(os.path.join(path, lpm.METADATA_FILE))


def shipped_dir():
    """The folder of the shipped predictors. Keras loads a model from a file path, so the package must
    lie on disk (a pip install or a clone does; a zipped package is not supported)."""
    return str(importlib.resources.files(SHIPPED_PACKAGE))


def shipped():
    """{name: directory} of the shipped predictors (ladnas_tf/predictors/<name>/)."""
    folder = shipped_dir()
    return {entry: os.path.join(folder, entry) for entry in sorted(os.listdir(folder))
            if NAME_PATTERN.fullmatch(entry) and _is_lpm_dir(os.path.join(folder, entry))}


def user():
    """{name: directory} of the predictors in the user folder (shipped names excluded, and the staging
    folders a killed write leaves, `<name>.<hex>.partial`)."""
    home, taken = user_home(), shipped()
    if not os.path.isdir(home):
        return {}
    return {entry: os.path.join(home, entry) for entry in sorted(os.listdir(home))
            if NAME_PATTERN.fullmatch(entry) and entry not in taken and not entry.endswith('.partial')
            and _is_lpm_dir(os.path.join(home, entry))}


def known():
    return {**user(), **shipped()}


def looks_like_path(value):
    """A value with a path separator, or starting with '.' or '~', is a directory, never a name."""
    return os.sep in value or '/' in value or value.startswith(('.', '~'))


def resolve(value):
    """The LPM directory a name or a directory stands for; RegistryError in one line otherwise.

    A bare word is looked up as a name first and then as a directory relative to the working folder."""
    if not value:
        raise RegistryError('no predictor given (a name such as cpu_tflite_cifar, or an LPM directory)')
    value = str(value)
    if not looks_like_path(value):
        found = known().get(value)
        if found:
            return found
    path = os.path.expanduser(value)
    if _is_lpm_dir(path):
        return path
    if os.path.isdir(path) and looks_like_path(value):
        raise RegistryError(f'{value}: no {lpm.METADATA_FILE}, not an LPM directory')
    if looks_like_path(value):
        raise RegistryError(f'{value}: no such LPM directory')
    names = ', '.join(known()) or 'none'
    raise RegistryError(f'unknown predictor {value!r} (known: {names}; or give an LPM directory)')


def load(name_or_dir, target=None, setting=None):
    """The predictor a name or a directory stands for, ready to predict (LPM.predict_genotypes) and to
    drive a search; refused in one line when its files are broken (check_predictor) or it is not one of
    this search space (or, given, of this target and setting: LPM.load)."""
    path = resolve(name_or_dir)
    check_predictor(path)
    return lpm.LPM.load(path, target=target, setting=setting)


def target_description(name_or_dir):
    """The device a predictor was measured on, from its metadata alone (no model loaded)."""
    return lpm.target_description(check_predictor(resolve(name_or_dir)))


# ---- whether a predictor's files can be believed ----

# Fields of metadata.json's `data` and of metrics.json that the list shows: numbers (or null) when present.
DATA_NUMBERS = ('rows', 'train_rows', 'val_rows')
SCORE_NUMBERS = ('mre_pct', 'kendall_tau', 'train_size', 'val_size')


def _number(value):
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and math.isfinite(value))


def _check_numbers(where, values, keys):
    bad = next((k for k in keys if not _number(values.get(k))), None)
    if bad:
        raise RegistryError(f'{where}: {bad!r} is not a number')


def _check_object(where, value):
    if not isinstance(value, dict):
        raise RegistryError(f'{where} is not a JSON object')
    return value


def _read_scores(path):
    """metrics.json as a dict ({} when there is none), its shown fields checked."""
    metrics_file = os.path.join(path, METRICS_FILE)
    if not os.path.exists(metrics_file):
        return {}
    try:
        with open(metrics_file) as f:
            scores = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise RegistryError(f'{metrics_file}: unreadable ({e.__class__.__name__})') from None
    _check_object(metrics_file, scores)
    _check_numbers(metrics_file, scores, SCORE_NUMBERS)
    if 'vs_normalised' in scores:
        _check_numbers(metrics_file, _check_object(f'{metrics_file}: vs_normalised', scores['vs_normalised']),
                       SCORE_NUMBERS)
    if not isinstance(scores.get('scored_by', ''), (str, type(None))):
        raise RegistryError(f'{metrics_file}: \'scored_by\' is not a string')
    return scores


def check_predictor(path):
    """The metadata of the predictor at path once every file the tools read is believed: metadata.json
    (lpm.read_metadata's checks, a known target, its data and origin objects) and metrics.json (numbers
    where the list shows numbers); LPMError (one line) otherwise."""
    meta = lpm.read_metadata(path)
    meta_file = os.path.join(path, lpm.METADATA_FILE)
    for description in (meta, lpm.target_description(meta)):
        table.check_target(description, meta_file, RegistryError)
    for key in ('data', 'adapted_from'):
        if key in meta:
            _check_object(f'{meta_file}: {key!r}', meta[key])
    _check_numbers(meta_file, meta.get('data', {}), DATA_NUMBERS)
    _read_scores(path)
    return meta


def problem(path):
    """Why the predictor at path is broken, as a short phrase naming the file, or None."""
    try:
        check_predictor(path)
    except lpm.LPMError as e:
        text = str(e).replace(os.path.join(path, ''), '')
        return (text[len(path) + 2:] if text.startswith(f'{path}: ') else text)[:100]
    return None


def user_dir(name):
    """Where a user predictor called `name` lives; refuses the shipped names."""
    check_name(name)
    if name in shipped():
        raise RegistryError(f'{name!r} is a shipped predictor; choose another name')
    return os.path.join(user_home(), name)


def name_of(path):
    """The registered name of an LPM directory, or None."""
    absolute = os.path.realpath(path)
    return next((n for n, d in known().items() if os.path.realpath(d) == absolute), None)


ROW_KEYS = ('name', 'kind', 'target', 'setting', 'device', 'cells', 'label', 'table_rows', 'mre_pct',
            'kendall_tau', 'mre_pct_normalised', 'kendall_tau_normalised', 'scored_by', 'adapted_from', 'path',
            'broken')


def describe(name, path, kind):
    """One row of the predictor list: what it predicts, from how much data, how well; a broken one
    (problem) only with its name, kind, path and why it is broken."""
    why = problem(path)
    if why:
        return {**dict.fromkeys(ROW_KEYS), 'name': name, 'kind': kind, 'path': path, 'broken': why}
    meta = lpm.read_metadata(path)
    scores = _read_scores(path)
    data = meta.get('data', {})
    rows = data.get('rows', (data.get('train_rows') or 0) + (data.get('val_rows') or 0)) or None
    adapted = meta.get('adapted_from') or {}
    normalised = scores.get('vs_normalised', {})
    return {'name': name, 'kind': kind, 'target': meta['target'], 'setting': meta['setting'],
            'device': lpm.target_description(meta).get('device'), 'cells': meta['cells'],
            'label': meta['label'].get('kind'), 'table_rows': rows,
            'mre_pct': scores.get('mre_pct'), 'kendall_tau': scores.get('kendall_tau'),
            # a load-normalised LPM is best judged against load-normalised test labels (train_lpm's view)
            'mre_pct_normalised': normalised.get('mre_pct'), 'kendall_tau_normalised': normalised.get('kendall_tau'),
            'scored_by': scores.get('scored_by', 'test split' if scores else None),
            'adapted_from': (f'{adapted.get("name") or adapted.get("dir")} ({adapted.get("method")}, '
                             f'{adapted.get("rows")} rows)') if adapted else None,
            'path': path, 'broken': None}


def list_predictors():
    """Rows (dicts) of every shipped and user predictor, shipped first."""
    return ([describe(n, d, 'shipped') for n, d in shipped().items()]
            + [describe(n, d, 'user') for n, d in user().items()])
