"""Every tool's boundary: bad flags, non-finite numbers and unusable output paths are one line, a
non-zero exit, and nothing written; real bugs keep their traceback."""
import contextlib
import io
import math
import os

import pytest
from absl import flags
from hypothesis import HealthCheck, given, settings, strategies as st

import ladnas_tf
from tools import cli

DIGITS_SEARCH = ['--dataset=digits', '--epochs=1', '--max_steps_per_epoch=1', '--channels=4', '--layers=2',
                 '--measure_latency=false']


def _tool(run_tool, name, *args):
    return run_tool(name, *args, env={'TF_CPP_MIN_LOG_LEVEL': '3'})


def _one_line(done):
    assert done.returncode != 0, done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(('I1', 'W1'))]
    assert 'Traceback' not in done.stderr, done.stderr
    errors = [line for line in lines if line.startswith('error:')]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.fixture
def blocker(tmp_path):
    """A regular file: any path under it can be neither read nor created."""
    path = tmp_path / 'a_file'
    path.write_text('not a folder')
    return path


@pytest.mark.slow
@pytest.mark.parametrize('tool,args', [
    ('search', DIGITS_SEARCH + ['--lambda_=0', '--lpm=']),
    ('train', ['--genotype=DARTS_V2', '--dataset=digits', '--epochs=1', '--channels=4', '--layers=2',
               '--auxiliary=false']),
    ('train_lpm', ['--tables=data/cpu_tflite_int8_cifar.csv', '--epochs=1']),
    ('adapt_lpm', ['--tables=data/cpu_tflite_int8_cifar.csv', '--method=scale']),
    ('export_tflite', ['--genotype=DARTS_V2', '--channels=4', '--cells=2']),
    ('profile_latency', ['--count=1', '--channels=4', '--cells=2', '--image_size=8']),
])
def test_every_tool_refuses_an_output_path_under_a_file_in_one_line(run_tool, tool, args, blocker):
    out = {'export_tflite': f'--output={blocker}/x.tflite', 'profile_latency': f'--table={blocker}/t.csv'}.get(
        tool, f'--model_dir={blocker}/run')
    done = _tool(run_tool, tool, *args, out)
    assert str(blocker) in _one_line(done)
    assert blocker.read_text() == 'not a folder'
    assert sorted(os.listdir(blocker.parent)) == ['a_file']  # no partial output beside it either


@pytest.mark.parametrize('flag', ['--lambda_=nan', '--lambda_=inf', '--target_latency_ms=nan',
                                  '--learning_rate=-inf'])
@pytest.mark.slow
def test_non_finite_float_flags_are_refused_before_anything_is_written(run_tool, flag, tmp_path):
    done = _tool(run_tool, 'search', flag, f'--model_dir={tmp_path / "run"}')
    assert flag.split('=')[0] in _one_line(done) and 'finite' in done.stderr
    assert not (tmp_path / 'run').exists()


def test_a_flag_parsing_error_is_one_line(run_tool, tmp_path):
    done = _tool(run_tool, 'profile_latency', '--count=many', f'--table={tmp_path / "t.csv"}')
    assert 'count' in _one_line(done)
    assert not (tmp_path / 't.csv').exists()


def test_os_errors_name_their_paths():
    e = FileNotFoundError(2, 'No such file or directory', '/x/y')
    assert cli.os_error_text(e) == '/x/y: No such file or directory'
    e = OSError(18, 'Invalid cross-device link', '/a', None, '/b')
    assert cli.os_error_text(e) == '/a -> /b: Invalid cross-device link'


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only input errors become one line: a TypeError in a tool is a bug and must show where it is."""
    monkeypatch.setattr(cli.app, 'run', lambda main, flags_parser: main(['tool']))

    def buggy(argv):
        return None + 1
    with pytest.raises(TypeError):
        cli.run(buggy)


def test_flag_values_are_checked_only_where_given():
    flags.DEFINE_float('cli_test_ratio', float('nan'), 'A float flag whose default is not finite.')
    try:
        cli.parse_flags(['tool'])  # the default is the program's, not the user's: not checked
        with pytest.raises(SystemExit):
            cli.parse_flags(['tool', '--cli_test_ratio=inf'])
    finally:
        delattr(flags.FLAGS, 'cli_test_ratio')


def test_a_timing_core_outside_the_allowed_ones_is_one_line(run_tool, tmp_path):
    done = _tool(run_tool, 'profile_latency', f'--timing_cpu={os.cpu_count() + 3}', f'--table={tmp_path / "t.csv"}')
    assert 'may run on cores' in _one_line(done)
    assert not (tmp_path / 't.csv').exists()


@pytest.fixture(scope='module')
def float_flags():
    """Float flags of the kinds the tools define (no tool imported: two tools in one process would
    define their common flags twice)."""
    names = {'cli_prop_weight': None, 'cli_prop_rate': 0.0, 'cli_prop_ms': 1.0}
    for name, lower in names.items():
        flags.DEFINE_float(name, 2.0, 'A float flag for the property test.', lower_bound=lower)
    yield list(names)
    for name in names:
        delattr(flags.FLAGS, name)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                       st.text(alphabet='0123456789.-+einfa', max_size=8)),
       pick=st.integers(0, 2))
def test_float_flag_values_parse_to_finite_numbers_or_fail_in_one_line(float_flags, value, pick):
    name = float_flags[pick]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            cli.parse_flags(['tool', f'--{name}={value}'])
    except SystemExit as e:
        assert e.code == 1 and stderr.getvalue().count('\n') == 1 and stderr.getvalue().startswith('error: ')
    else:
        assert math.isfinite(getattr(flags.FLAGS, name))
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.slow
def test_the_default_search_has_no_tensorflow_error_lines(tmp_path, run_tool):
    """A newcomer's first run (no TF_CPP_MIN_LOG_LEVEL set): TensorFlow's C++ notices, the oneDNN DT_INT32
    one at the first graph above all, stay off stderr; so do TensorFlow's INFO lines at each checkpoint."""
    done = run_tool('search', *DIGITS_SEARCH, '--lat_samples=2', f'--model_dir={tmp_path / "run"}',
                    without=('TF_CPP_MIN_LOG_LEVEL',))
    assert done.returncode == 0, done.stderr
    assert 'predicted' in done.stdout  # the shipped predictor was used: the latency-aware default
    assert 'oneDNN' not in done.stderr and not any(line.startswith('E0000') for line in done.stderr.splitlines())
    assert 'Sharding callback duration' not in done.stderr


@pytest.mark.slow
def test_one_command_lists_the_tools_and_runs_one(run_tool, repo_root):
    listing = run_tool(None, timeout=300)
    assert listing.returncode == 0, listing.stderr
    commands = {line.split()[0] for line in listing.stdout.splitlines()[3:]}
    assert commands == {f[:-3] for f in os.listdir(os.path.join(repo_root, 'tools'))
                        if f.endswith('.py') and f not in ('__init__.py', '__main__.py', 'cli.py')}
    assert 'search  ' in listing.stdout and 'Differentiable architecture search' in listing.stdout
    done = run_tool(None, 'lpms', '--json', timeout=300)
    assert done.returncode == 0, done.stderr
    assert 'cpu_tflite_cifar' in done.stdout
    unknown = run_tool(None, 'serach', timeout=300)
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: unknown command 'serach'")


def test_listing_the_tools_and_importing_the_package_load_no_tensorflow(run_tool):
    """`ladnas --help` and `import ladnas_tf` stay light: the public names are imported on first use."""
    code = ('import sys; import ladnas_tf; from tools import __main__ as ladnas; ladnas.main(["ladnas", "--help"]); '
            'print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules), ladnas_tf.__version__)')
    done = run_tool('-c', code, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('usage:') and done.stdout.splitlines()[-1] == f'[] {ladnas_tf.__version__}'
    assert {'search', 'train', 'export', 'genotypes', 'LPM', 'load_predictor', 'list_predictors'} <= set(dir(ladnas_tf))


@pytest.mark.parametrize('tool', ['train', 'search'])
def test_a_malformed_tf_config_is_one_line_and_nothing_is_written(tool, tmp_path, monkeypatch, run_tool):
    monkeypatch.setenv('TF_CONFIG', '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", ')
    args = ['--genotype=DARTS_V2', '--dataset=digits'] if tool == 'train' else DIGITS_SEARCH
    done = _tool(run_tool, tool, *args, '--strategy=multi_worker', f'--model_dir={tmp_path / "run"}')
    line = _one_line(done)
    assert 'TF_CONFIG is not valid JSON' in line and 'line 1 column 68' in line, line  # where the text ends
    assert os.listdir(tmp_path) == []
