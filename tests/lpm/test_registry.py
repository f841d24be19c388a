"""Named predictors: names and directories resolved, listed, refused in one line; tools.search --lpm.

The user predictors here are untrained regressors saved with hand-written metadata: what is tested is
how they are found and refused, not how well they predict."""
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from ladnas_tf import search_space
from ladnas_tf.graph.setting import Setting
from ladnas_tf.lpm import model as lpm, registry
from ladnas_tf.profiling import table



@pytest.fixture
def save_lpm(predictors):
    """A user predictor as tools.adapt_lpm leaves one (12 rows, adapted from the shipped one)."""
    def save(path, target='cpu_tflite', cells='both', signature=None, device='board'):
        return predictors.save(path, cells=cells, target=target, signature=signature, device=device,
                               data={'rows': 12},
                               adapted_from={'name': 'cpu_tflite_cifar', 'method': 'scale', 'rows': 12})
    return save


@pytest.fixture
def shipped_dir(repo_root):
    return os.path.join(repo_root, 'ladnas_tf', 'predictors', 'cpu_tflite_cifar')


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / 'home'
    monkeypatch.setenv(registry.HOME_ENV, str(folder))
    return folder


# ---- names and directories ----

def test_the_shipped_predictor_resolves_by_name(home, shipped_dir):
    assert registry.resolve('cpu_tflite_cifar') == shipped_dir
    assert registry.shipped()['cpu_tflite_cifar'] == shipped_dir
    assert registry.name_of(shipped_dir) == 'cpu_tflite_cifar'


def test_the_shipped_predictor_is_package_data_naming_its_table_relative_to_the_repository(
        home, tmp_path, monkeypatch, shipped_dir, repo_root):
    monkeypatch.chdir(tmp_path)  # found through the package, not the working folder
    assert registry.resolve('cpu_tflite_cifar') == shipped_dir
    tables = json.loads(open(os.path.join(shipped_dir, lpm.METADATA_FILE)).read())['data']['tables']
    assert tables == ['data/cpu_tflite_cifar.csv'] and os.path.isfile(os.path.join(repo_root, tables[0]))


def test_a_directory_resolves_to_itself(home, tmp_path, monkeypatch, save_lpm):
    path = save_lpm(tmp_path / 'mine')
    assert registry.resolve(path) == path
    monkeypatch.chdir(tmp_path)
    assert registry.resolve('./mine') == './mine'
    assert registry.resolve('mine') == 'mine'  # a bare word that is no name, but a directory here


@pytest.mark.parametrize('value, message', [('no_such_lpm', 'unknown predictor'), ('./nowhere', 'no such LPM'),
                                            ('', 'no predictor given')])
def test_unknown_names_and_paths_fail_in_one_line(home, value, message):
    with pytest.raises(registry.RegistryError, match=message) as error:
        registry.resolve(value)
    assert '\n' not in str(error.value) and isinstance(error.value, lpm.LPMError)
    if message == 'unknown predictor':
        assert 'cpu_tflite_cifar' in str(error.value)  # the known names are listed


def test_a_directory_without_metadata_is_refused(home, tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(registry.RegistryError, match='not an LPM directory'):
        registry.resolve(str(tmp_path / 'empty'))


def test_user_predictors_are_listed_and_resolved(home, shipped_dir, save_lpm):
    save_lpm(registry.user_dir('board_b'), device='Cortex-A76')
    assert registry.resolve('board_b') == str(home / 'board_b')
    rows = {r['name']: r for r in registry.list_predictors()}
    assert rows['cpu_tflite_cifar']['kind'] == 'shipped' and rows['board_b']['kind'] == 'user'
    assert rows['board_b']['device'] == 'Cortex-A76' and rows['board_b']['table_rows'] == 12
    assert rows['board_b']['adapted_from'] == 'cpu_tflite_cifar (scale, 12 rows)'
    shipped = rows['cpu_tflite_cifar']
    assert shipped['target'] == 'cpu_tflite' and shipped['setting'] == Setting().key
    with open(os.path.join(shipped_dir, 'metrics.json')) as f:
        scores = json.load(f)
    assert shipped['mre_pct'] == scores['mre_pct']
    assert shipped['table_rows'] == scores['train_size'] + scores['val_size']
    assert shipped['kendall_tau_normalised'] == scores['vs_normalised']['kendall_tau']


def test_a_shipped_name_cannot_be_taken(home, shipped_dir, save_lpm):
    with pytest.raises(registry.RegistryError, match='shipped'):
        registry.user_dir('cpu_tflite_cifar')
    save_lpm(home / 'cpu_tflite_cifar')  # put there by hand: the shipped one still wins
    assert registry.resolve('cpu_tflite_cifar') == shipped_dir
    assert [r['kind'] for r in registry.list_predictors() if r['name'] == 'cpu_tflite_cifar'] == ['shipped']


# ---- broken entries: listed as broken with why, refused in one line when asked for ----

def _edit_json(path, edit):
    with open(path) as f:
        value = json.load(f)
    with open(path, 'w') as f:
        json.dump(edit(value), f)


BROKEN = {  # name -> (what is done to a good predictor's files, words the listing and the refusal must hold)
    'meta_list': (lambda d: _edit_json(d / 'metadata.json', lambda m: [m]), ['metadata.json', 'JSON list']),
    'desc_list': (lambda d: _edit_json(d / 'metadata.json', lambda m: {**m, 'target_description': [1]}),
                  ['metadata.json', 'target_description']),
    'data_list': (lambda d: _edit_json(d / 'metadata.json', lambda m: {**m, 'data': [12]}),
                  ['metadata.json', 'data']),
    'metric_text': (lambda d: (d / 'metrics.json').write_text('{"mre_pct": "low", "kendall_tau": 0.9}'),
                    ['metrics.json', 'mre_pct', 'not a number']),
    'metrics_list': (lambda d: (d / 'metrics.json').write_text('[]'), ['metrics.json', 'not a JSON object']),
    'on_a_tpu': (lambda d: _edit_json(d / 'metadata.json', lambda m: {**m, 'target': 'tpu',
                                                                       'target_description': {'target': 'tpu'}}),
                 ['unknown target', "'tpu'"]),
}


@pytest.fixture
def broken_home(home, save_lpm):
    save_lpm(registry.user_dir('good'))
    for name, (damage, _) in BROKEN.items():
        damage(Path(save_lpm(registry.user_dir(name))))
    return home


def test_a_broken_entry_is_listed_as_broken_with_why(broken_home):
    rows = {r['name']: r for r in registry.list_predictors()}
    assert rows['good']['broken'] is None and rows['cpu_tflite_cifar']['broken'] is None
    for name, (_, words) in BROKEN.items():
        why = rows[name]['broken']
        assert rows[name]['kind'] == 'user' and all(w in why for w in words), (name, why)
        assert '\n' not in why and str(broken_home) not in why  # a short phrase, no folders


@pytest.mark.parametrize('name', sorted(BROKEN))
def test_a_broken_entry_is_refused_in_one_line_when_asked_for(broken_home, name):
    for use in (registry.load, registry.target_description):
        with pytest.raises(lpm.LPMError) as error:
            use(name)
        assert '\n' not in str(error.value) and all(w in str(error.value) for w in BROKEN[name][1])


def test_tools_lpms_lists_broken_entries_without_a_traceback(broken_home, run_tool):
    done = run_tool('lpms', env={registry.HOME_ENV: str(broken_home)}, timeout=300)
    assert done.returncode == 0 and 'Traceback' not in done.stderr, done.stderr[-2000:]
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:] if line.strip()}
    for name in BROKEN:
        assert 'BROKEN: ' in lines[name], lines[name]
    assert lines['good'].rstrip().endswith('ok')
    listed = run_tool('lpms', '--json', env={registry.HOME_ENV: str(broken_home)}, timeout=300)
    rows = {r['name']: r for r in json.loads(listed.stdout)}
    assert all(rows[name]['broken'] for name in BROKEN) and rows['good']['broken'] is None


def test_a_home_that_is_a_file_is_an_error_in_one_line(tmp_path, monkeypatch, run_tool):
    home = tmp_path / 'lpms'
    home.write_text('not a folder')
    monkeypatch.setenv(registry.HOME_ENV, str(home))
    for use in (registry.list_predictors, lambda: registry.resolve('cpu_tflite_cifar'),
                lambda: registry.user_dir('board')):
        with pytest.raises(registry.RegistryError, match='is a file, not a folder') as error:
            use()
        assert '\n' not in str(error.value)
    done = run_tool('lpms', env={registry.HOME_ENV: str(home)}, timeout=300)
    assert done.returncode == 1 and done.stderr.strip().count('\n') == 0, done.stderr
    assert done.stderr.startswith('error: ') and 'is a file' in done.stderr and home.read_text() == 'not a folder'


def test_a_staging_folder_of_a_killed_write_is_not_a_predictor(home, save_lpm):
    save_lpm(home / 'board.1a2b3c4d.partial')
    assert 'board.1a2b3c4d.partial' not in registry.user()


def test_paths_are_recorded_without_this_machines_folders(tmp_path, repo_root):
    assert table.portable(os.path.join(repo_root, 'data', 'cpu_tflite_cifar.csv')) == os.path.join('data',
                                                                                                 'cpu_tflite_cifar.csv')
    assert table.portable(str(tmp_path / 'x' / 'board.csv')) == 'board.csv'
    assert table.portable(str(tmp_path / 'lpm') + '/') == 'lpm'


# The rule as the error message and README state it, written here without the code's NAME_PATTERN:
# lowercase ASCII letters, digits, '_', '-', '.'; 1 to 64 characters; a letter or digit first; no '.' last.
FIRST, REST = 'abcdefghijklmnopqrstuvwxyz0123456789', 'abcdefghijklmnopqrstuvwxyz0123456789_-.'


def is_name(text):
    return (1 <= len(text) <= 64 and text[0] in FIRST and all(c in REST for c in text)
            and not text.endswith('.'))


NAMES = st.builds(lambda first, rest: first + rest, st.sampled_from(FIRST),
                  st.text(REST, max_size=63)).filter(lambda n: not n.endswith('.'))


@pytest.mark.parametrize('name', ['a', '0', 'board', 'pi-4b_v2.1', 'my.board-2', 'x' * 64, '9_-.x'])
def test_these_are_names(name):
    assert registry.check_name(name) == name


@pytest.mark.parametrize('text', ['', 'x' * 65, 'Board', '-board', '_board', '.board', 'board.', 'a/b', '../a',
                                  'a b', 'café', 'a\nb', 'a:b', '~', 'ｂoard', 'a\x00'])
def test_these_are_not_names(text):
    with pytest.raises(registry.RegistryError, match='is not a predictor name') as error:
        registry.check_name(text)
    assert '\n' not in str(error.value)


def test_the_rule_written_here_sorts_the_lists_above():
    assert all(is_name(n) for n in ['a', 'board', 'pi-4b_v2.1', 'x' * 64])
    assert not any(is_name(t) for t in ['', 'x' * 65, 'Board', '-board', 'board.', 'a/b', 'ｂoard'])


@settings(max_examples=200, deadline=None)
@given(name=NAMES)
def test_every_valid_name_is_a_name_and_never_a_path(name):
    assert registry.check_name(name) == name
    assert not registry.looks_like_path(name)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80) | NAMES | st.text(REST + 'A/ \n', max_size=70))
def test_names_are_exactly_the_stated_rule(text):
    if is_name(text):
        assert registry.check_name(text) == text
    else:
        with pytest.raises(registry.RegistryError) as error:
            registry.check_name(text)
        assert '\n' not in str(error.value)


@settings(max_examples=30, deadline=None)
@given(name=NAMES.filter(lambda n: n != 'cpu_tflite_cifar'))
def test_an_unregistered_name_fails_in_one_line(name, tmp_path_factory):
    os.environ[registry.HOME_ENV] = str(tmp_path_factory.mktemp('empty_home'))
    try:
        with pytest.raises(registry.RegistryError, match='unknown predictor'):
            registry.resolve(name)
    finally:
        del os.environ[registry.HOME_ENV]


# ---- tools.search --lpm ----

def _search(run_tool, *args, home, timeout=600):
    return run_tool('search', *args, env={registry.HOME_ENV: str(home), 'TF_CPP_MIN_LOG_LEVEL': '2'},
                    timeout=timeout)


@pytest.mark.slow
def test_search_refuses_an_unknown_name_another_space_or_target_before_writing(home, tmp_path, run_tool, save_lpm):
    other = save_lpm(tmp_path / 'other_space', signature={**search_space.signature(), 'primitives': ['none']})
    tpu = save_lpm(tmp_path / 'tpu', target='tpu')
    for value, message in (('no_such_lpm', 'unknown predictor'), (other, 'another search space'),
                           (tpu, "unknown target 'tpu'")):
        run = tmp_path / 'run'
        done = _search(run_tool, f'--lpm={value}', f'--model_dir={run}', home=home)
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert done.stderr.strip().count('\n') == 0 and not run.exists()


@pytest.mark.slow
def test_search_runs_with_an_lpm_of_a_target_this_machine_cannot_time(home, tmp_path, run_tool, save_lpm):
    save_lpm(registry.user_dir('far_board'), target='gpu')  # a known kind; this test machine has no GPU
    run = tmp_path / 'run'
    done = _search(run_tool, '--lpm=far_board', f'--model_dir={run}', '--epochs=1', '--max_steps_per_epoch=2',
                   '--channels=4', '--layers=2', '--batch_size=8', '--progress=false', '--lat_samples=2', home=home)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'not timing the derived network' in done.stderr
    with open(run / 'summary.json') as f:
        latency = json.load(f)['latency']
    assert latency['target'] == 'gpu' and 'predicted_ms' in latency and 'measured_ms' not in latency


@pytest.mark.slow
def test_search_still_takes_the_deprecated_lpm_dir(home, tmp_path, run_tool):
    done = _search(run_tool, '--lpm_dir=./nowhere', f'--model_dir={tmp_path / "run"}', home=home)
    assert done.returncode == 1 and '--lpm_dir is deprecated' in done.stderr
    assert 'error: ./nowhere: no such LPM directory' in done.stderr and not (tmp_path / 'run').exists()
