"""tests/needs.py: a missing program or module skips a test with its reason outside CI, and fails it
under CI=true (where .ci/run installed it, so a skip would hide a broken install)."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = '''
import needs

def test_program():
    needs.program('no-such-program-ladnas', 'apt-get install it')

def test_module():
    needs.module('no_such_module_ladnas', 'pip install it')

def test_present():
    assert needs.module('json', 'stdlib').dumps(1) == '1'
'''


def _run(tmp_path, ci):
    (tmp_path / 'test_cases.py').write_text(CASES)
    env = {k: v for k, v in os.environ.items() if k != 'CI'}
    if ci is not None:
        env['CI'] = ci
    env['PYTHONPATH'] = HERE
    return subprocess.run([sys.executable, '-m', 'pytest', '-p', 'no:xdist', '-p', 'no:cacheprovider', '-q', '-rs',
                           '-c', os.devnull, str(tmp_path / 'test_cases.py')],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('ci', [None, 'false'])
def test_outside_ci_a_missing_need_skips_and_says_why(tmp_path, ci):
    out = _run(tmp_path, ci).stdout
    assert '1 passed, 2 skipped' in out, out
    assert "the program `no-such-program-ladnas` is missing (apt-get install it)" in out
    assert "the Python module `no_such_module_ladnas` is missing (pip install it)" in out


@pytest.mark.parametrize('ci', ['true', '1'])
def test_under_ci_a_missing_need_fails(tmp_path, ci):
    result = _run(tmp_path, ci)
    assert result.returncode == 1 and '2 failed, 1 passed' in result.stdout, result.stdout
    assert 'CI=true but the program `no-such-program-ladnas` is missing' in result.stdout
    assert 'skipped' not in result.stdout
