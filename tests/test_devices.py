"""A tool reaches a remote device only when the user named it on this machine (a flag of the tool, or
`ladnas devices add`): a table's or predictor's metadata only selects among those, and never supplies the
host, Python or folder. A fake `ssh` first on PATH records every call: the oracle of "connected"."""
import json
import os
import sys
import types

import pytest

from ladnas_tf import genotypes, search
from ladnas_tf.graph.setting import Setting
from ladnas_tf.profiling.targets import devices, registry

BOARD = 'pi@board.example:2222'
RECORDED = {'target': 'ssh', 'setting': 'cifar_c4_l2_s8', 'threads': 1, 'host': BOARD,
            'device_python': '/tmp/evil/python', 'device_folder': '/tmp/evil/folder'}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty $LADNAS_HOME: no registered devices but the test's."""
    folder = tmp_path / 'ladnas_home'
    monkeypatch.setenv(devices.HOME_ENV, str(folder))
    return folder


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    """An `ssh` first on PATH that records its arguments and fails as a refused connection does; returns
    the calls recorded so far (a function: [argv, ...])."""
    bin_dir, log = tmp_path / 'fake_bin', tmp_path / 'ssh_calls.log'
    bin_dir.mkdir()
    script = bin_dir / 'ssh'
    script.write_text(f'#!{sys.executable}\nimport json, sys\n'
                      f'with open({str(log)!r}, "a") as f:\n    f.write(json.dumps(sys.argv[1:]) + "\\n")\n'
                      'sys.exit("ssh: connect to host board.example port 2222: Connection refused")\n')
    script.chmod(0o755)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    return lambda: [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _devices_tool(run_tool, home, *args):
    return run_tool('devices', *args, env={devices.HOME_ENV: str(home)}, timeout=120)


# ---- the registry and its tool ----

def test_devices_are_added_listed_updated_and_removed(home, run_tool):
    added = _devices_tool(run_tool, home, 'add', BOARD, '--device_python=/usr/bin/python3')
    assert added.returncode == 0, added.stderr
    phone = _devices_tool(run_tool, home, 'add', '--target=adb', 'R58M123', '--device_cache_mb=50')
    assert phone.returncode == 0, phone.stderr
    assert json.loads((home / 'devices.json').read_text()) == {'devices': [
        {'target': 'ssh', 'device': BOARD, 'python': '/usr/bin/python3'},
        {'target': 'adb', 'serial': 'R58M123', 'cache_mb': 50.0}]}
    again = _devices_tool(run_tool, home, 'add', BOARD, '--device_folder=/srv/models')  # replaces, not adds
    assert again.returncode == 0 and again.stdout.startswith('updated')
    listed = _devices_tool(run_tool, home, 'list').stdout.splitlines()
    assert listed == ['adb  R58M123  cache_mb=50.0', f'ssh  {BOARD}  folder=/srv/models']
    assert _devices_tool(run_tool, home, 'remove', BOARD).returncode == 0
    assert [d.name for d in registry.user_devices()] == ['R58M123']


@pytest.mark.parametrize('args', [('add', '-oProxyCommand=touch /tmp/pwned'), ('add', 'board\n-p1'),
                                  ('add', BOARD, '--device_python=-c'), ('add', BOARD, '--device_folder=a\nb'),
                                  ('add', '--target=adb', 'R58M;reboot'), ('add', '--target=adb', BOARD,
                                                                           '--device_python=python3'),
                                  ('remove', 'never@added'), ('add',), ('forget', BOARD)])
def test_a_bad_device_or_command_is_one_line_and_writes_nothing(home, run_tool, args):
    done = _devices_tool(run_tool, home, *args)
    errors = [line for line in done.stderr.splitlines() if line.startswith('error:')]
    assert done.returncode != 0 and len(errors) == 1 and 'Traceback' not in done.stderr, done.stderr
    assert not (home / 'devices.json').exists()


def test_the_tool_is_in_the_command_list(run_tool):
    listed = run_tool(None, '--help', timeout=120)
    assert any(line.split()[:1] == ['devices'] for line in listed.stdout.splitlines())


@pytest.mark.parametrize('content', ['[1, 2]', '{"devices": {}}', '{"devices": [["ssh"]]}', 'not json',
                                     '{"devices": [{"target": "ssh", "device": "-oProxyCommand=x"}]}',
                                     '{"devices": [{"target": "ssh", "device": "b", "host": "other"}]}',
                                     '{"devices": [{"target": "tpu", "device": "b"}]}'])
def test_a_broken_devices_file_is_refused_in_one_line_naming_it(home, content):
    home.mkdir()
    (home / 'devices.json').write_text(content)
    with pytest.raises(devices.DeviceError, match='devices.json') as refused:
        registry.user_devices()
    assert '\n' not in str(refused.value)


# ---- a description only selects among the user's devices ----

def test_a_host_the_user_did_not_name_is_refused_with_how_to_name_it(home):
    with pytest.raises(registry.NotNamedError) as refused:
        registry.target_of(RECORDED)
    assert str(refused.value) == (
        f'predictor was measured on ssh host {BOARD}, which you have not named on this machine: pass '
        f'--device={BOARD} or run `ladnas devices add {BOARD}` to time there')


def test_a_named_device_is_reached_with_the_users_python_and_folder_never_the_files(home):
    by_flag = registry.target_of(RECORDED, [registry.device('ssh', device=BOARD, python='/opt/py/bin/python3')])
    assert (by_flag.device, by_flag.python, by_flag.folder) == (BOARD, '/opt/py/bin/python3',
                                                                 '~/.cache/ladnas_tf_agent')  # the default
    registry.add_device(registry.device('ssh', device='pi@board.example:2222', folder='/srv/models'))
    registered = registry.target_of(RECORDED)
    assert (registered.python, registered.folder) == ('python3', '/srv/models')
    other_port = {**RECORDED, 'host': 'pi@board.example:22'}  # another device: not selected
    with pytest.raises(registry.NotNamedError):
        registry.target_of(other_port)


def test_an_adb_description_selects_a_named_phone_only(home):
    phone = {'target': 'adb', 'serial': 'R58M123', 'delegate': 'gpu', 'threads': 4}
    with pytest.raises(registry.NotNamedError, match='adb device R58M123, which you have not named'):
        registry.target_of(phone)
    target = registry.target_of(phone, [registry.device('adb', serial='R58M123', adb='/opt/platform-tools/adb')])
    assert (target.serial, target.adb, target.delegate, target.threads) == ('R58M123', '/opt/platform-tools/adb',
                                                                             'gpu', 4)


@pytest.mark.parametrize('host', ['-oProxyCommand=touch /tmp/pwned', 'board\n-p1', None, ['board'], 'a b'])
def test_a_hostile_recorded_host_is_refused_in_one_line_without_connecting(home, fake_ssh, host):
    registry.add_device(registry.device('ssh', device='board'))
    target, why = registry.reachable({**RECORDED, 'host': host})
    assert target is None and 'the recorded ssh host' in why and '\n' not in why
    assert fake_ssh() == []


@pytest.mark.parametrize('threads', ['4; reboot', -1, 10 ** 9, True])
def test_recorded_threads_that_are_not_a_count_are_refused(home, threads):
    with pytest.raises(registry.TargetError, match='not a thread count'):
        registry.target_of({**RECORDED, 'threads': threads}, [registry.device('ssh', device=BOARD)])


# ---- what the search's summary and the pipeline reach ----

def _goal(description):
    return types.SimpleNamespace(report=lambda genotype: {'predicted_ms': 12.0},
                                 target_description=lambda: description, setting=Setting('cifar', 4, 2, 8, 1, 10))


def test_the_search_summary_does_not_connect_to_a_host_only_the_predictor_names(home, fake_ssh):
    report = search.latency_report(_goal(RECORDED), genotypes.DARTS_V2, log=lambda line: None)
    assert fake_ssh() == [] and 'measured_ms' not in report
    assert report['not_measured'].startswith(f'predictor was measured on ssh host {BOARD}, which you have not named')


def test_the_search_summary_connects_to_a_registered_host_with_the_users_settings(home, fake_ssh):
    registry.add_device(registry.device('ssh', device=BOARD, python='/opt/py/bin/python3', connect_timeout_s=1))
    report = search.latency_report(_goal(RECORDED), genotypes.DARTS_V2, log=lambda line: None)
    calls = fake_ssh()
    assert len(calls) == 1 and calls[0][-3:-1] == ['--', 'pi@board.example'] and '-p' in calls[0]
    assert calls[0][-1].startswith('/opt/py/bin/python3 ') and '/tmp/evil' not in ' '.join(calls[0])
    assert report['not_measured'].startswith(f'cannot reach {BOARD} over ssh: ') and 'measured_ms' not in report


def test_the_search_summary_connects_to_a_host_named_by_the_tools_flag(home, fake_ssh):
    named = [registry.device('ssh', device=BOARD)]
    report = search.latency_report(_goal(RECORDED), genotypes.DARTS_V2, log=lambda line: None, devices=named)
    assert len(fake_ssh()) == 1 and 'cannot reach' in report['not_measured']


def test_the_pipeline_reaches_the_predictors_host_only_when_named(home, fake_ssh, tmp_path, predictors):
    from ladnas_tf import pipeline
    from ladnas_tf.lpm import registry as lpm_registry
    shared = lpm_registry.load(predictors.save(tmp_path / 'shared_lpm', target='ssh', target_description=RECORDED))
    target, why = pipeline._latency_target(None, shared)
    assert target is None and 'which you have not named on this machine' in why and fake_ssh() == []
    registry.add_device(registry.device('ssh', device=BOARD, connect_timeout_s=1))
    target, why = pipeline._latency_target(None, shared)
    assert target is None and why.startswith(f'cannot reach {BOARD}') and len(fake_ssh()) == 1


@pytest.mark.slow
def test_a_search_with_a_shared_predictor_does_not_connect_where_its_metadata_points(
        home, fake_ssh, tmp_path, run_tool, predictors):
    lpm_dir = predictors.save(tmp_path / 'shared_lpm', target='ssh', target_description=RECORDED)
    run = tmp_path / 'run'
    done = run_tool('search', f'--lpm={lpm_dir}', f'--model_dir={run}', '--epochs=1', '--max_steps_per_epoch=2',
                    '--channels=4', '--layers=2', '--batch_size=8', '--progress=false', '--lat_samples=2',
                    env={devices.HOME_ENV: str(home), 'PATH': os.environ['PATH'], 'TF_CPP_MIN_LOG_LEVEL': '2'})
    assert done.returncode == 0, done.stderr[-2000:]
    assert fake_ssh() == []
    latency = json.loads((run / 'summary.json').read_text())['latency']
    assert 'measured_ms' not in latency and 'which you have not named on this machine' in latency['not_measured']
