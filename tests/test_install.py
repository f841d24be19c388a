"""The package as a user installs it: `pip install .` (and `-e .`) into a fresh venv, then the `ladnas`
command from a folder that is not the repository, finding the shipped predictor as package data.

Offline: the new venv has no pip and no packages of its own; a .pth file makes the project's venv its
base (pip, setuptools, TensorFlow, ...), and the package goes in with --no-deps --no-build-isolation
--no-index. pip builds a source tree in place (build/, *.egg-info), so it builds a copy of the repository."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib

import pytest

TINY_SEARCH = ['--epochs=1', '--max_steps_per_epoch=2', '--channels=4', '--layers=2', '--lat_samples=2',
               '--measure_latency=false']


def _packages_below(folder, name):
    """Dotted names of the packages (folders with __init__.py) at and below `folder`."""
    found = []
    for path, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        if '__init__.py' in files:
            relative = os.path.relpath(path, folder)
            found.append(name if relative == '.' else f'{name}.{relative.replace(os.sep, ".")}')
    return sorted(found)


def test_pyproject_lists_every_package_of_the_library(repo_root):
    with open(os.path.join(repo_root, 'pyproject.toml'), 'rb') as f:
        setuptools = tomllib.load(f)['tool']['setuptools']
    assert setuptools['package-dir'] == {'ladnas_tf.tools': 'tools'}
    assert sorted(setuptools['packages']) == sorted(_packages_below(os.path.join(repo_root, 'ladnas_tf'), 'ladnas_tf')
                                                    + ['ladnas_tf.tools'])


def _env():
    """The user's environment, without anything that would put the repository on the path."""
    return {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'TF_CPP_MIN_LOG_LEVEL')}


def _install(repo, tmp, editable):
    """A venv in `tmp` with a copy of the repository installed: (venv, the copy, the venv's site-packages)."""
    source, venv = tmp / 'source', tmp / 'venv'
    shutil.copytree(repo, source, ignore=shutil.ignore_patterns(
        '.git', '.venv', 'runs', '__pycache__', '.pytest_cache', '.hypothesis', 'build', '*.egg-info'))
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True, timeout=120)
    python = venv / 'bin' / 'python'
    site = subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    base = sysconfig.get_paths()['purelib']  # the project's venv: this test runs in it
    with open(os.path.join(site, '_project_venv.pth'), 'w') as f:
        f.write(f'import site; site.addsitedir({base!r})\n')  # addsitedir: its own .pth files count too
    subprocess.run([str(python), '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation',
                    '--no-index', *(['-e'] if editable else []), str(source)],
                   check=True, capture_output=True, timeout=600, env=_env())
    return venv, source, site


def _ladnas(venv, *args, cwd):
    return subprocess.run([str(venv / 'bin' / 'ladnas'), *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope='module')
def installed(repo_root, tmp_path_factory):
    return _install(repo_root, tmp_path_factory.mktemp('install'), editable=False)


@pytest.mark.slow
def test_the_package_installs_with_no_generic_top_level_names(installed):
    venv, source, site = installed
    assert {n for n in os.listdir(site) if not n.startswith('_') and not n.endswith('.dist-info')} == {'ladnas_tf'}
    shipped = os.path.join(site, 'ladnas_tf', 'predictors', 'cpu_tflite_cifar')
    assert sorted(os.listdir(shipped)) == ['lpm.keras', 'metadata.json', 'metrics.json', 'scatter.png']


@pytest.mark.slow
def test_ladnas_lists_the_commands_and_the_shipped_predictor_from_any_folder(installed, tmp_path):
    venv, source, site = installed
    listing = _ladnas(venv, '--help', cwd=tmp_path)
    assert listing.returncode == 0 and listing.stdout.startswith('usage: ladnas <command>'), listing.stderr
    assert '  search ' in listing.stdout and '  pipeline ' in listing.stdout
    done = _ladnas(venv, 'lpms', '--json', cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {row['name']: row for row in json.loads(done.stdout)}
    assert rows['cpu_tflite_cifar']['kind'] == 'shipped'
    assert rows['cpu_tflite_cifar']['path'] == os.path.join(site, 'ladnas_tf', 'predictors', 'cpu_tflite_cifar')


@pytest.mark.slow
def test_ladnas_search_runs_the_default_latency_aware_search_from_any_folder(installed, tmp_path):
    venv, source, site = installed
    run = tmp_path / 'run'
    done = _ladnas(venv, 'search', *TINY_SEARCH, f'--model_dir={run}', cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    line = next(l for l in done.stdout.splitlines() if l.startswith('latency at '))  # the shipped predictor's
    assert 'predicted ' in line and 'x DARTS_V2 on ' in line and 'cpu_tflite' in line, line
    assert json.dumps(os.path.join(site, 'ladnas_tf', 'predictors', 'cpu_tflite_cifar')) in (
        run / 'config.json').read_text()  # the installed copy's predictor, not the repository's
    assert (run / 'summary.json').exists()
    assert sorted(os.listdir(tmp_path)) == ['run']  # nothing written into the working folder


@pytest.mark.slow
def test_the_python_api_finds_the_shipped_predictor_from_any_folder(installed, tmp_path):
    """The README's way in: `import ladnas_tf; ladnas_tf.load_predictor('cpu_tflite_cifar')`."""
    venv, source, site = installed
    code = ('import ladnas_tf; p = ladnas_tf.load_predictor("cpu_tflite_cifar"); '
            'print(p.path); print(p.predict_genotypes([ladnas_tf.genotypes.DARTS_V2])[0] > 0)')
    done = subprocess.run([str(venv / 'bin' / 'python'), '-c', code], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [os.path.join(site, 'ladnas_tf', 'predictors', 'cpu_tflite_cifar'), 'True']


@pytest.mark.slow
def test_an_editable_install_runs_the_sources_in_place(repo_root, tmp_path):
    venv, source, site = _install(repo_root, tmp_path, editable=True)
    done = _ladnas(venv, 'lpms', '--json', cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {row['name']: row for row in json.loads(done.stdout)}
    assert rows['cpu_tflite_cifar']['path'] == str(source / 'ladnas_tf' / 'predictors' / 'cpu_tflite_cifar')
    where = subprocess.run([str(venv / 'bin' / 'python'), '-c', 'import ladnas_tf.tools.cli as c; print(c.__file__)'],
                           cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert where.stdout.strip() == str(source / 'tools' / 'cli.py'), where.stderr
