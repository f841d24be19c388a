"""The ssh target end to end against a real OpenSSH server on 127.0.0.1 (Debian's openssh-server,
installed by .ci/run): profiling, a server killed mid-run, resume, a dead port, a shell that prints before
the agent starts, the device's bounded cache; device strings and paths no shell or ssh can misread; and
the agent itself."""
import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest
from hypothesis import given, strategies as st

import needs
import sshd
from ladnas_tf import genotypes, search_space
from ladnas_tf.graph import constant, tflite_writer
from ladnas_tf.graph.setting import Setting
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


# ---- device strings and device paths: refused unless no shell or option parser can misread them ----

HOSTILE = ['-oProxyCommand=touch /tmp/pwned', '-p22', 'board\n-oProxyCommand=x', 'user@board;reboot', 'a b',
           'board\t', '\u00fc@board', 'board\x00', '\u202eboard', 'user@-board', '-', '', 'user@', '@board',
           'board:', 'board:99999', 'board:0', 'user@board:22:33', '$(reboot)', '`id`@board', 'board|x', 'us er@b',
           'board\r', 'b\u2028oard', 'user@@board', 'user@board/x', None, 22]


@pytest.mark.parametrize('device', HOSTILE)
def test_a_hostile_device_string_is_refused_in_one_line(device):
    with pytest.raises(base.TargetError) as refused:
        remote.SshTarget(device)
    assert '\n' not in str(refused.value)


SAFE = re.compile(r'[A-Za-z0-9._@:-]+')  # what may reach ssh as the destination, whatever the input


def _given_to_ssh(target):
    argv = target.ssh_argv('marker')
    end = argv.index('--')
    return argv[end + 1:]


@given(st.text(st.sampled_from(list('ab1.-_@:;[] \n\t\x00$`|\'"\\/\u00e9\u202e')) | st.characters(), max_size=30))
def test_any_device_string_is_refused_or_reaches_ssh_after_a_double_dash(device):
    try:
        target = remote.SshTarget(device)
    except base.TargetError as refused:
        assert '\n' not in str(refused)
        return
    destination, command = _given_to_ssh(target)  # '--', then exactly the destination and the command
    assert SAFE.fullmatch(destination) and not destination.startswith('-')
    assert not any(c.isspace() or ord(c) < 32 or ord(c) > 126 for c in device) and not device.startswith('-')


@given(st.text(max_size=20))
def test_a_device_string_starting_with_a_dash_is_always_refused(rest):
    with pytest.raises(base.TargetError, match='not user@host'):
        remote.parse_device('-' + rest)


@pytest.mark.parametrize('option,value', [('python', '-c'), ('python', 'python3\nrm -rf ~'), ('folder', '-rf'),
                                          ('folder', 'a\nb'), ('folder', ''), ('python', 'py\x1b[2J'),
                                          ('folder', 'x\u202e'), ('ssh_options', ['ProxyCommand=x\nid'])])
def test_a_device_python_or_folder_a_shell_would_misread_is_refused_in_one_line(option, value):
    with pytest.raises(base.TargetError) as refused:
        remote.SshTarget('user@board', **{option: value})
    assert '\n' not in str(refused.value)


def test_the_device_python_and_folder_are_single_shell_words():
    folder, python = "my models; rm -rf ~ 'x'", '~/venv with space/bin/python'
    target = remote.SshTarget('user@board:2222', python=python, folder=folder)
    destination, command = _given_to_ssh(target)
    assert destination == 'user@board'
    words = shlex.split(command)  # as the remote shell splits it (the '~/' is left for it to expand)
    assert words == [python, '-u', '-c', remote.BOOTSTRAP, folder, 'marker']
    assert command.startswith('~/')


# ---- the agent's framing: what the shell prints before the agent is skipped ----

NOISE = 'echo "Welcome to the board"; echo \'{"ok": true, "fake": 1}\'; printf "no newline here"'


def test_shell_noise_before_the_agent_is_skipped(tmp_path):
    marker = 'ladnas-agent-test'
    argv = ['sh', '-c', f'{NOISE}; exec "$0" "$@"', sys.executable, '-u', '-c', remote.BOOTSTRAP,
            str(tmp_path / 'agent'), marker]
    connection = remote.AgentConnection(argv, 60, marker)
    try:
        described = connection.request({'op': 'describe'})
        assert described['cores'] == os.cpu_count() and 'fake' not in described
        assert connection.request({'op': 'missing', 'names': ['0' * 64]}) == {'missing': ['0' * 64]}
    finally:
        connection.close()


def test_what_a_library_prints_in_the_agent_goes_to_stderr_not_among_the_answers(repo_root):
    code = ('import sys; from ladnas_tf.profiling import agent\n'
            'out = agent._own_stdout()\nprint("library chatter", flush=True)\nout.write(b"answer\\n"); out.flush()')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, timeout=120, cwd=repo_root)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'answer\n' and b'library chatter' in done.stderr


@pytest.fixture(scope='module')
def noisy_server(tmp_path_factory):
    needs.check(sshd.available(), 'an OpenSSH server (sshd, ssh, ssh-keygen)',
                'apt-get install openssh-server openssh-client; .ci/run does')
    srv = sshd.Server(tmp_path_factory.mktemp('noisy_sshd'),
                      force_command=f'{NOISE}; eval "$SSH_ORIGINAL_COMMAND"').start()
    yield srv
    srv.kill()


@pytest.mark.slow
def test_profiles_through_a_shell_that_prints_before_the_agent(noisy_server, tmp_path, run_tool):
    path = str(tmp_path / 'noisy.csv')
    proc = _cli(run_tool, f'--table={path}', '--count=2', f'--device_python={sys.executable}',
                f'--device_folder={tmp_path / "device"}', *noisy_server.flags())
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert 'Traceback' not in err and len(table.read(path)) == 2


# ---- the device's cache: bounded, least recently used files removed, the reference's kept ----

def _touch(folder, name, size, age_s):
    path = folder / f'{name}.tflite'
    path.write_bytes(b'x' * size)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def test_the_agent_removes_the_least_recently_used_files_beyond_its_limit_never_a_kept_one(tmp_path):
    names = [c * 64 for c in 'abcde']
    for age, name in zip((50, 40, 30, 20, 10), names):  # a oldest ... e newest
        _touch(tmp_path, name, 100, age)
    (tmp_path / 'notes.txt').write_text('not a model: never counted or removed')
    left = agent.Agent(str(tmp_path)).cache(limit=250, keep={names[0]})
    # 500 bytes, 250 allowed: a is kept, b, c and d (oldest first) go: 200 bytes left
    assert left == {'files': 2, 'bytes': 200, 'removed': names[1:4]}
    assert sorted(os.listdir(tmp_path)) == sorted([f'{names[0]}.tflite', f'{names[4]}.tflite', 'notes.txt'])
    assert agent.Agent(str(tmp_path)).cache() == {'files': 2, 'bytes': 200, 'removed': []}


@pytest.mark.slow
def test_a_100_row_run_leaves_at_most_the_configured_cache_on_the_device(server, tmp_path, run_tool):
    path, device, limit_mb = str(tmp_path / 'cached.csv'), tmp_path / 'device', 0.1
    proc = _cli(run_tool, f'--table={path}', '--count=100', '--runs=2', '--warmup=0', '--reference_runs=1',
                '--max_attempts=1', '--batch=10', f'--device_cache_mb={limit_mb}', f'--device_python={sys.executable}',
                f'--device_folder={device}', *server.flags())
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert len(table.read(path)) == 100
    files = {p.name: p.stat().st_size for p in (device / 'models').iterdir()}
    reference = tflite_writer.timing_tflite(genotypes.DARTS_V2, **Setting('cifar', 4, 2, 8, 1, 10).network_kwargs())[0]
    assert hashlib.sha256(reference).hexdigest() + '.tflite' in files  # the reference network's stays
    assert all(name.endswith('.tflite') for name in files)  # no half-sent file left
    # ~13 kB a file: 100 would be ~1.3 MB; the two files just timed always stay, and fit in 0.1 MB here
    assert 2 <= len(files) and sum(files.values()) <= limit_mb * 1e6
    said = re.search(r'left on the device: (\d+) model files, ([\d.]+) MB', out)
    assert said and int(said.group(1)) == len(files)
    assert float(said.group(2)) == pytest.approx(sum(files.values()) / 1e6, abs=0.06)


def test_two_agents_on_one_folder_store_the_same_model_at_once(tmp_path, monkeypatch):
    """Two devices on one host share a folder: while one agent is between writing a model and renaming
    it into place, the other stores the same model. Both succeed, one whole file, no temporary left."""
    content = b'model bytes'
    name = hashlib.sha256(content).hexdigest()
    first, second = agent.Agent(str(tmp_path)), agent.Agent(str(tmp_path))
    replace = os.replace

    def interleaved(src, dst):
        monkeypatch.setattr(agent.os, 'replace', replace)
        assert second.put(name, content) == {}  # the other agent, in the middle of the first one's put
        replace(src, dst)

    monkeypatch.setattr(agent.os, 'replace', interleaved)
    assert first.put(name, content) == {}
    assert os.listdir(tmp_path) == [f'{name}.tflite']
    assert (tmp_path / f'{name}.tflite').read_bytes() == content
    assert first.missing([name]) == {'missing': []}
