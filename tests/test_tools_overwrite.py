"""--overwrite removes only what the tool itself writes: pointed at a folder that holds other runs and the
user's files (runs/), train_lpm, lpm_sweep and adapt_lpm (--model_dir and --name) leave every one of them,
byte for byte, and the folders beside it too.

The oracle is a listing of the foreign files taken here before the run, not the tools' list of outputs."""
import os

import numpy as np
import pytest

from ladnas_tf import search_space
from ladnas_tf.graph.setting import Setting

from conftest import folder_bytes

pytestmark = pytest.mark.slow  # each test runs a tool end to end

FOREIGN = {  # path under the output folder's parent -> content
    'sibling.txt': b'beside the output',
    'runs.partial/keep.txt': b'a folder named as the old staging folder was',
    'runs/notes.txt': b'the user\'s notes inside the output folder',
    'runs/other_run/settings.json': b'{"a": "search run of someone else"}',
    'runs/other_run/checkpoints/ckpt-1.index': b'\x00\x01',
    'runs/n5/readme.txt': b'not a sweep run: no LPM in it',
}


def _plant(parent, files):
    for rel, content in files.items():
        os.makedirs(os.path.dirname(os.path.join(parent, rel)), exist_ok=True)
        with open(os.path.join(parent, rel), 'wb') as f:
            f.write(content)


def _kept(parent, files):
    """The planted files that are gone or changed (none, if the tool kept them)."""
    now = folder_bytes(parent)
    return sorted(rel for rel, content in files.items() if now.get(rel) != content)


@pytest.fixture
def table(latency_table, tmp_path):
    rng = np.random.default_rng(0)
    rows = [latency_table.row(search_space.sample_genotype(rng), 10.0 + k % 9, 'cpu_tflite', Setting().key, ref_ms=9.0)
            for k in range(40)]
    return latency_table.write(tmp_path / 'table.csv', rows, {'target': 'cpu_tflite', 'setting': Setting().key,
                                                             'device': 'test cpu', 'threads': 1})


@pytest.fixture
def parent(tmp_path, predictors):
    """A folder holding `runs/` (the output folder: an earlier LPM's files, other runs, notes) and more."""
    folder = tmp_path / 'parent'
    predictors.save(folder / 'runs')  # an earlier predictor in the output folder: its files are outputs
    _plant(folder, {**FOREIGN, 'runs/scatter.png': b'stale plot of the earlier predictor'})
    return folder


def _ok(done):
    assert done.returncode == 0, done.stderr[-3000:]


def test_train_lpm_overwrite_keeps_what_it_did_not_write(run_tool, table, parent):
    _ok(run_tool('train_lpm', f'--tables={table}', f'--model_dir={parent / "runs"}', '--overwrite', '--epochs=1',
                 '--batch_size=16', '--noprogress', timeout=900))
    assert _kept(parent, FOREIGN) == []
    written = folder_bytes(parent / 'runs')
    assert {'lpm.keras', 'metadata.json', 'metrics.json', 'scatter.png'} <= set(written)
    assert written['scatter.png'] != b'stale plot of the earlier predictor'
    assert not [p for p in os.listdir(parent) if p.endswith('.partial') and p != 'runs.partial']


def test_lpm_sweep_overwrite_removes_only_its_earlier_sweep(run_tool, table, parent, predictors):
    predictors.save(parent / 'runs' / 'n999')  # a size of an earlier sweep ...
    _plant(parent, {'runs/n999/mine.txt': b'... with a file of the user in it'})
    _plant(parent, {'runs/sweep.csv': b'train_rows\n999\n'})
    _ok(run_tool('lpm_sweep', f'--tables={table}', f'--model_dir={parent / "runs"}', '--overwrite', '--sizes=10',
                 '--epochs=1', '--batch_size=16', '--noprogress', timeout=900))
    assert _kept(parent, {**FOREIGN, 'runs/n999/mine.txt': b'... with a file of the user in it'}) == []
    assert sorted(os.listdir(parent / 'runs' / 'n999')) == ['mine.txt']  # its predictor is gone
    assert (parent / 'runs' / 'sweep.csv').read_text().splitlines()[1].startswith('10,')
    assert (parent / 'runs' / 'n10' / 'metadata.json').is_file()


def test_adapt_lpm_overwrite_keeps_what_it_did_not_write_in_both_places(run_tool, table, parent, predictors, tmp_path):
    base = predictors.save(tmp_path / 'base')
    home = tmp_path / 'home'
    predictors.save(home / 'board')  # the registered predictor being replaced
    home_foreign = {'board/notes.txt': b'notes in the registered folder', 'README': b'the user\'s home',
                    'other_board/metadata.json': b'{"another": "predictor"}'}
    _plant(home, home_foreign)
    _ok(run_tool('adapt_lpm', f'--base={base}', f'--tables={table}', f'--model_dir={parent / "runs"}',
                 '--name=board', '--method=scale', '--overwrite', env={'LADNAS_LPM_HOME': str(home)}, timeout=900))
    assert _kept(parent, FOREIGN) == [] and _kept(home, home_foreign) == []
    for folder in (parent / 'runs', home / 'board'):
        written = folder_bytes(folder)
        assert {'lpm.keras', 'metadata.json', 'metrics.json'} <= set(written)
        assert b'"adapted_from"' in written['metadata.json']
    assert not (parent / 'runs' / 'scatter.png').exists()  # the earlier predictor's plot is not this one's
    assert not [p for p in os.listdir(home) if p.endswith('.partial')]
