"""The ssh target end to end against a real OpenSSH server on 127.0.0.1 (Debian's openssh-server,
installed by .ci/run): profiling, a server killed mid-run, resume, a dead port; and the agent itself."""
import hashlib
import io
import json
import os
import sys
import time

import pytest
from hypothesis import given, strategies as st

import needs
import sshd
from ladnas_tf import genotypes, search_space
from ladnas_tf.graph import constant
from ladnas_tf.profiling import agent, table
from ladnas_tf.profiling.targets import base, registry, ssh as remote

TINY = ['--setting=cifar', '--channels=4', '--cells=2', '--image_size=8', '--warmup=1', '--runs=3',
        '--reference_runs=2', '--workers=1', '--batch=1', '--target=ssh']


def _cli(run_tool, *args):
    return run_tool('profile_latency', *TINY, *args, env={'TF_CPP_MIN_LOG_LEVEL': '3'}, popen=True)


def _rows(path):
    try:
        with open(path) as f:
            return max(0, sum(1 for _ in f) - 1)
    except FileNotFoundError:
        return 0


def _errors(stderr):
    return [line for line in stderr.splitlines() if line.startswith('error:')]


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    # Outside CI a machine without sshd skips these tests (the reason in the summary); CI installs it.
    needs.check(sshd.available(), 'an OpenSSH server (sshd, ssh, ssh-keygen)',
                'apt-get install openssh-server openssh-client; .ci/run does')
    srv = sshd.Server(tmp_path_factory.mktemp('sshd')).start()
    yield srv
    srv.kill()


@pytest.mark.slow
def test_server_killed_mid_run_then_the_same_command_completes_the_table(server, tmp_path, run_tool):
    path, count = str(tmp_path / 'ssh.csv'), 20  # enough that the kill lands mid-run: files take ms to write
    args = [f'--table={path}', f'--count={count}', f'--device_python={sys.executable}',
            f'--device_folder={tmp_path / "device"}', '--retries=1', '--backoff_s=0.2', *server.flags()]
    proc = _cli(run_tool, *args)
    deadline = time.time() + 300
    while _rows(path) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    server.kill()  # mid-run: the next architecture is being written or timed
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, out
    assert len(_errors(err)) == 1 and 'connection lost' in _errors(err)[0], err
    assert 'Traceback' not in err
    kept = _rows(path)
    assert 1 <= kept < count

    server.start()
    again = _cli(run_tool, *args)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    df = table.read(path)
    assert len(df) == count and df['arch_id'].is_unique
    assert (df['latency_ms'] > 0).all() and (df['ref_ms'] > 0).all()
    with open(path.replace('.csv', '.meta.json')) as f:
        meta = json.load(f)
    assert meta['target'] == 'ssh' and meta['host'] == server.device
    assert meta['device'].endswith(f'{os.cpu_count()} cores, {os.uname().machine}')  # read on the device
    # One stored copy per model (named by its hash): what this checks. That a file sent before the kill was
    # not sent again is not observed here (the transfer count is not exposed).
    assert len(os.listdir(tmp_path / 'device' / 'models')) == count + 1  # the architectures + DARTS_V2


@pytest.mark.slow
def test_calibration_times_darts_v2_and_a_spread_of_the_base_predictors_range(server, tmp_path, run_tool):
    """--calibration=N over ssh: DARTS_V2 (also the reference network, so one file serves both) and
    architectures from distinct bins of the shipped predictor's range, at that predictor's setting."""
    path = str(tmp_path / 'calibration.csv')
    proc = _cli(run_tool, f'--table={path}', '--calibration=3', '--lpm=cpu_tflite_cifar', '--channels=36', '--cells=20',
                '--image_size=32', f'--device_python={sys.executable}', f'--device_folder={tmp_path / "device"}',
                *server.flags())
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    df = table.read(path)
    assert len(df) == 3 and search_space.genotype_id(genotypes.DARTS_V2) in set(df['arch_id'])
    assert len(os.listdir(tmp_path / 'device' / 'models')) == 3


def test_a_dead_port_fails_in_one_line_and_writes_nothing(tmp_path, run_tool):
    needs.program('ssh', 'the OpenSSH client: apt-get install openssh-client')  # no server: the port is dead
    path = tmp_path / 'dead.csv'
    proc = _cli(run_tool, f'--table={path}', '--count=1', f'--device=127.0.0.1:{sshd.free_port()}',
                '--ssh_config=/dev/null', '--connect_timeout_s=5')
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert len(_errors(err)) == 1 and 'cannot reach 127.0.0.1' in _errors(err)[0], err
    assert 'Traceback' not in err
    assert not os.path.exists(path) and not os.path.exists(tmp_path / 'dead.meta.json')


def test_ssh_without_a_device_is_one_clear_error():
    with pytest.raises(base.TargetError, match='needs a device'):
        registry.make_target('ssh')


@given(st.from_regex(r'([a-z_][a-z0-9_-]{0,8}@)?[a-z0-9][a-z0-9.-]{0,20}(:[0-9]{1,5})?', fullmatch=True))
def test_device_strings_parse_or_fail_with_target_error(device):
    try:
        destination, port = remote.parse_device(device)
    except base.TargetError as e:
        assert 'out of range' in str(e) or 'not user@host' in str(e)
        return
    assert device.startswith(destination)
    assert port is None or (0 < port < 65536 and device.endswith(f':{device.rsplit(":", 1)[1]}'))


@given(st.text(max_size=30))
def test_arbitrary_device_text_never_crashes_the_parser(device):
    try:
        remote.parse_device(device)
    except base.TargetError:
        pass


# ---- the agent, spoken to over pipes as the ssh connection does ----

@pytest.fixture(scope='module')
def tiny_models():
    kwargs = dict(setting='cifar', channels=4, num_cells=2, image_size=8)
    return tuple(constant.genotype_to_tflite(g, **kwargs)[0] for g in (genotypes.DARTS_V2, genotypes.PC_DARTS))


def _serve(folder, requests):
    """requests: dicts, each optionally followed by the raw bytes of a file."""
    stream = b''.join(r if isinstance(r, bytes) else json.dumps(r).encode() + b'\n' for r in requests)
    out = io.BytesIO()
    agent.serve(str(folder), io.BytesIO(stream), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_agent_stores_by_hash_refuses_damage_and_times_with_the_protocol(tmp_path, tiny_models):
    ref, model = tiny_models
    names = [hashlib.sha256(m).hexdigest() for m in tiny_models]
    damaged = model[:-1] + bytes([model[-1] ^ 1])
    answers = _serve(tmp_path, [
        {'op': 'missing', 'names': names},
        {'op': 'put', 'name': names[1], 'size': len(damaged)}, damaged,
        {'op': 'put', 'name': names[0], 'size': len(ref)}, ref,
        {'op': 'put', 'name': names[1], 'size': len(model)}, model,
        {'op': 'missing', 'names': names},
        {'op': 'time', 'model': names[1], 'reference': names[0],
         'protocol': {'warmup': 1, 'runs': 3, 'max_cv': 10.0, 'max_attempts': 1, 'reference_runs': 2}},
        {'op': 'time', 'model': '../../etc/passwd', 'reference': names[0]},
        {'op': 'reboot'},
    ])
    assert answers[0] == {'ok': True, 'missing': names}
    assert not answers[1]['ok'] and 'does not match its SHA-256' in answers[1]['error']
    assert answers[2]['ok'] and answers[3]['ok'] and answers[4] == {'ok': True, 'missing': []}
    timed = answers[5]
    assert timed['ok'] and timed['attempts'] == 1
    assert timed['stats']['runs'] == 3 and timed['reference']['runs'] == 4  # 2 before + 2 after
    assert timed['stats']['latency_ms'] > 0 and timed['reference']['latency_ms'] > 0
    assert not answers[6]['ok'] and 'not a SHA-256' in answers[6]['error']
    assert not answers[7]['ok'] and 'unknown op' in answers[7]['error']
    assert sorted(os.listdir(tmp_path)) == sorted(n + '.tflite' for n in names)  # no .tmp left over


def test_agent_describes_the_machine_it_runs_on():
    d = agent.describe()
    assert d['cores'] == os.cpu_count() and d['machine'] == os.uname().machine
    assert d['versions']['ai-edge-litert'] != 'unknown'
