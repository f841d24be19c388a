"""Shared test set-up: quiet TensorFlow, and the fixtures every test that needs one uses: the repository
root, a tool runner, a latency-table builder and a saved predictor."""
import dataclasses
import json
import math
import os
import subprocess
import sys
import types

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
import tools  # noqa: E402,F401  (in-process tests run TensorFlow as the tools do: oneDNN's kernels)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def repo_root():
    """The repository's folder (tools run from it, data/ and configs/ lie in it)."""
    return REPO


def run_tool(name, *args, env=None, without=(), cwd=REPO, timeout=600, popen=False):
    """`python -m tools.<name> args` from the repository with `env` on top of this process's environment
    (less the variables named in `without`); its CompletedProcess (text), or with popen=True the running
    Popen (own session: killable as a group). name None runs `python -m tools` (the one command); a name
    starting with '-' runs `python <name> args` (-c code)."""
    if name and name.startswith('-'):
        argv = [sys.executable, name]
    else:
        argv = [sys.executable, '-m', 'tools' + (f'.{name}' if name else '')]
    full_env = {k: v for k, v in {**os.environ, 'PYTHONPATH': REPO, **(env or {})}.items() if k not in without}
    if popen:
        return subprocess.Popen(argv + list(args), cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    return subprocess.run(argv + list(args), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(name='run_tool', scope='session')
def run_tool_fixture():
    """run_tool(name, *args, env=None, without=(), cwd=REPO, timeout=600, popen=False): see conftest.run_tool."""
    return run_tool


def folder_bytes(folder):
    """{relative path: bytes} of every file under folder: an oracle of 'nothing changed' not taken from
    the code under test."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


# ---- latency tables ----

def table_row(genotype, latency_ms, target, setting, **columns):
    """One row of a latency table as the profiler writes it (timing statistics made up around latency_ms);
    `columns` add or replace columns (ref_ms, ...)."""
    from ladnas_tf import search_space

    def bits(cell):
        return ''.join(str(int(b)) for b in search_space.encode_cell(cell))
    return {'arch_id': search_space.genotype_id(genotype), 'normal': json.dumps(genotype.normal),
            'reduce': json.dumps(genotype.reduce), 'normal_encoding': bits(genotype.normal),
            'reduce_encoding': bits(genotype.reduce), 'params': 1000, 'macs': 10000, 'latency_ms': latency_ms,
            'mean_ms': latency_ms, 'std_ms': 0.01, 'iqr_ms': 0.01, 'cv': 0.001, 'target': target,
            'setting': setting, **columns}


def write_table(path, rows, description=None):
    """A latency table at `path` (CSV) from rows (a DataFrame or dicts) and, given its description, its
    `.meta.json` beside it; returns the path."""
    import pandas as pd
    (rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)).to_csv(path, index=False)
    if description is not None:
        with open(os.path.splitext(str(path))[0] + '.meta.json', 'w') as f:
            json.dump(description, f)
    return str(path)


@pytest.fixture(scope='session')
def latency_table():
    """.row(genotype, latency_ms, target, setting, **columns) and .write(path, rows, description=None)."""
    return types.SimpleNamespace(row=table_row, write=write_table)


# ---- predictors ----

def make_predictor(cells='both', target='cpu_tflite', seed=0, signature=None, device=None, **metadata):
    """An untrained LPM with hand-written metadata, in memory (log scaling around 15 ms, so predictions
    are positive): for what reaches a predictor and how one is found, not for how well it predicts."""
    from ladnas_tf import search_space
    from ladnas_tf.graph.setting import Setting
    from ladnas_tf.lpm import model as lpm
    predictor = lpm.LPM(lpm.LPMRecipe(cells=cells, target_scaling='log', seed=seed))
    setting = Setting().key
    predictor.metadata = {
        'format': lpm.FORMAT, 'signature': signature or search_space.signature(), 'target': target,
        'setting': setting, 'target_description': {'target': target, 'setting': setting, 'threads': 1,
                                                   **({'device': device} if device else {})},
        'cells': cells, 'input_size': predictor.input_size, 'recipe': dataclasses.asdict(predictor.recipe),
        'label': {'kind': 'latency'}, 'scaling': {'kind': 'log', 'mean': math.log(15.0), 'std': 0.1}, **metadata}
    return predictor


def save_predictor(path, **kwargs):
    """make_predictor(**kwargs) saved as an LPM directory at `path`; returns the path."""
    make_predictor(**kwargs).save(str(path))
    return str(path)


@pytest.fixture(scope='session')
def predictors():
    """.make(cells='both', target=..., seed=..., signature=..., device=..., **metadata): an untrained LPM in
    memory; .save(path, **the same): it saved as an LPM directory (its path)."""
    return types.SimpleNamespace(make=make_predictor, save=save_predictor)
