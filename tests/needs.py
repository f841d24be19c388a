"""What a test needs from the machine (a program, a module), said once: outside CI a missing need skips
the test with the reason in the summary (pytest.ini's -rs); under CI=true it fails the test, because
.ci/run installs every need and a skip there would hide a broken install."""
import importlib
import os
import shutil

import pytest

IN_CI = os.environ.get('CI', '').lower() in ('true', '1')


def _missing(what, why):
    message = f'{what} is missing ({why})'
    if IN_CI:
        pytest.fail(f'CI=true but {message}: .ci/run must install it', pytrace=False)
    pytest.skip(message)


def program(name, why):
    """The path of program `name`, or skip (outside CI) / fail (CI) saying what is missing and why."""
    path = shutil.which(name)
    if path is None:
        _missing(f'the program `{name}`', why)
    return path


def module(name, why):
    """Module `name` imported, or skip (outside CI) / fail (CI) saying what is missing and why."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f'the Python module `{name}`', why)


def check(available, what, why):
    """For a need that is not a single program or module (an OpenSSH server and its tools)."""
    if not available:
        _missing(what, why)
