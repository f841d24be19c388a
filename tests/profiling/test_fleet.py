"""A profiling fleet: one stream split among several devices, their rows merged into one table, a device
that drops out leaving its share to the others. Fake devices for the split and merge; two real OpenSSH
servers on 127.0.0.1, one killed mid-run, end to end."""
import itertools
import json
import logging
import multiprocessing.pool
import os
import shutil
import sys
import threading
import time

import pandas as pd
import pytest

import needs
import sshd
from ladnas_tf import search_space
from ladnas_tf.graph.setting import Setting
from ladnas_tf.profiling import fleet, measure, profiler as profile, table
from ladnas_tf.profiling.targets import base, ssh

SETTING = Setting('cifar', 4, 2, 8, 1, 10)
FAST = dict(warmup=1, runs=2, reference_runs=1, workers=1, batch=4)


class FakeDevice(base.Target):
    """A device that times nothing: it records what it was given, calls `first()` before its first timing
    (to meet another device), and fails from its `fail_at`-th timing on as a lost board, calling
    `failing()`."""
    name = 'ssh'  # a known kind: tables refuse targets of no known kind

    def __init__(self, host, model='Board X', fail_at=None, first=None, failing=None):
        self.host, self.model, self.fail_at, self.first, self.failing = host, model, fail_at, first, failing
        self.timed, self.failed = [], []

    def describe(self):
        return {'target': self.name, 'device': self.model, 'threads': 1, 'host': self.host}

    def prepare(self, genotype, setting):
        return search_space.genotype_id(genotype).encode(), 10, 100

    def measure(self, artifact, reference, **protocol):
        if self.first is not None:
            self.first()
            self.first = None
        if self.fail_at is not None and len(self.timed) + 1 >= self.fail_at:
            self.failed.append(artifact)
            if self.failing:
                self.failing()
            raise base.TargetError(f'ssh {self.host}: connection lost (reset) and 1 retries failed')
        self.timed.append(artifact)
        stats = measure.Stats(1.0, 1.0, 0.01, 0.01, 0.01, protocol['runs'])
        return stats, stats, 1


def _pair():
    """Two fake devices of one model, each holding an architecture before either times one."""
    together = threading.Barrier(2)
    return FakeDevice('u@a', first=lambda: together.wait(60)), FakeDevice('u@b', first=lambda: together.wait(60))


@pytest.fixture(autouse=True)
def threaded_workers(monkeypatch):
    """The fakes' files are made in threads: a spawned worker would import TensorFlow, for nothing here."""
    class Context:
        @staticmethod
        def Pool(processes, initializer=None, initargs=(), maxtasksperchild=None):
            return multiprocessing.pool.ThreadPool(processes)
    monkeypatch.setattr(profile.multiprocessing, 'get_context', lambda method: Context)


def _stream(count, seed=0):
    return [search_space.genotype_id(g) for _, g in itertools.islice(profile.architectures(seed), count)]


def _check_complete(path, count):
    """The table holds the stream's first `count` architectures, each once."""
    df = table.read(path)
    assert len(df) == count and df['arch_id'].is_unique
    assert sorted(df['index']) == list(range(count)) and set(df['arch_id']) == set(_stream(count))
    return df


def test_a_fleet_splits_one_stream_and_merges_the_rows_into_one_table(tmp_path):
    a, b = _pair()
    path = str(tmp_path / 'fleet.csv')
    timer = profile.Profiler(fleet.Fleet([a, b]), SETTING, path, **FAST)
    assert timer.run(12) == 12
    df = _check_complete(path, 12)
    assert a.timed and b.timed and len(a.timed) + len(b.timed) == 12  # each architecture timed once
    assert set(df['device']) == {'u@a', 'u@b'}
    assert sorted(df.loc[df['device'] == 'u@a', 'arch_id']) == sorted(x.decode() for x in a.timed)
    with open(tmp_path / 'fleet.meta.json') as f:
        assert json.load(f)['fleet'] == ['u@a', 'u@b']
    assert profile.Profiler(fleet.Fleet(_pair()), SETTING, path, **FAST).run(12) == 0  # complete: resumed


def test_a_device_that_drops_out_leaves_its_share_and_its_architecture_to_the_others(tmp_path, caplog):
    gone = threading.Event()  # b times nothing until a has timed 2 and failed on its 3rd
    a, b = FakeDevice('u@a', fail_at=3, failing=gone.set), FakeDevice('u@b', first=lambda: gone.wait(60))
    path = str(tmp_path / 'fleet.csv')
    with caplog.at_level(logging.WARNING):
        assert profile.Profiler(fleet.Fleet([a, b]), SETTING, path, **FAST).run(10) == 10
    df = _check_complete(path, 10)
    assert len(a.timed) == 2 and len(a.failed) == 1 and len(b.timed) == 8
    assert a.failed[0] in b.timed  # what it held when it failed was timed again, by the other
    assert (df['device'] == 'u@a').sum() == 2
    assert [r.message for r in caplog.records if 'left the fleet' in r.message] == [
        'u@a left the fleet (ssh u@a: connection lost (reset) and 1 retries failed); 1 device(s) take its share']


def test_with_every_device_gone_the_run_fails_in_one_line_and_keeps_its_rows(tmp_path):
    a, b = FakeDevice('u@a', fail_at=2), FakeDevice('u@b', fail_at=3)
    path = str(tmp_path / 'fleet.csv')
    with pytest.raises(base.TargetError, match='connection lost'):
        profile.Profiler(fleet.Fleet([a, b]), SETTING, path, **FAST).run(10)
    df = table.read(path)
    assert len(df) == len(a.timed) + len(b.timed) == 3 and df['arch_id'].is_unique
    assert profile.Profiler(fleet.Fleet(_pair()), SETTING, path, **FAST).run(6) == 3  # the rest, resumed
    _check_complete(path, 6)


def test_one_device_times_the_stream_in_order_and_names_itself(tmp_path):
    device = FakeDevice('u@a')
    path = str(tmp_path / 'one.csv')
    assert profile.Profiler(device, SETTING, path, **FAST).run(5) == 5
    df = table.read(path)
    assert df['arch_id'].tolist() == _stream(5) and set(df['device']) == {'u@a'}
    with open(tmp_path / 'one.meta.json') as f:
        assert 'fleet' not in json.load(f)


def test_a_table_from_before_the_device_column_still_loads_and_resumes(tmp_path):
    path = str(tmp_path / 'old.csv')
    profile.Profiler(FakeDevice('u@a'), SETTING, path, **FAST).run(3)
    pd.read_csv(path, dtype=str).drop(columns='device').to_csv(path, index=False)  # as written before
    with open(path) as f:
        header = f.readline()
    assert profile.Profiler(fleet.Fleet(_pair()), SETTING, path, **FAST).run(6) == 3
    with open(path) as f:
        assert f.readline() == header  # its columns kept: the new rows name no device
    assert 'device' not in _check_complete(path, 6).columns


@pytest.mark.parametrize('other, message', [
    (FakeDevice('u@b', model='Board Y'), "u@b has device='Board Y', u@a has device='Board X'"),
    (type('Other', (FakeDevice,), {'name': 'adb'})('u@b'), "u@b has target='adb', u@a has target='ssh'")])
def test_devices_of_another_model_or_kind_are_refused_in_one_line_before_any_file(tmp_path, other, message):
    with pytest.raises(base.TargetError, match=f'fleet devices differ: {message}; a fleet is one device model'):
        profile.Profiler(fleet.Fleet([FakeDevice('u@a'), other]), SETTING, str(tmp_path / 'x.csv'), **FAST)
    assert os.listdir(tmp_path) == []


def test_a_device_list_makes_one_target_per_device_and_refuses_a_bad_list():
    made = fleet.make_targets('ssh', device='pi@a, pi@b:2222', numeric_format='int8')
    assert [t.device for t in made] == ['pi@a', 'pi@b:2222'] and all(isinstance(t, ssh.SshTarget) for t in made)
    assert {t.numeric_format for t in made} == {'int8'}
    assert [t.device for t in fleet.make_targets('ssh', device='pi@a')] == ['pi@a']
    assert len(fleet.make_targets('cpu_tflite')) == 1
    for bad, why in (('pi@a,,pi@b', 'has an empty entry'), ('pi@a,pi@b,pi@a', 'names pi@a twice')):
        with pytest.raises(base.TargetError, match=why):
            fleet.make_targets('ssh', device=bad)


# ---- two real devices: OpenSSH servers on 127.0.0.1 ----

TINY = ['--setting=cifar', '--channels=4', '--cells=2', '--image_size=8', '--warmup=1', '--runs=3',
        '--reference_runs=2', '--workers=1', '--batch=4', '--target=ssh']


def _servers(tmp_path):
    """Two servers that take the same client key (the tool has one --ssh_key)."""
    for name in ('sshd_a', 'sshd_b'):
        os.makedirs(tmp_path / name)
    first = sshd.Server(tmp_path / 'sshd_a')
    for name in ('client_key', 'client_key.pub'):
        shutil.copy(os.path.join(first.folder, name), tmp_path / 'sshd_b' / name)
    return first.start(), sshd.Server(tmp_path / 'sshd_b').start()


def _devices(path):
    """The device of each row written so far."""
    try:
        return list(pd.read_csv(path, usecols=['device'])['device'])
    except (FileNotFoundError, pd.errors.EmptyDataError, ValueError):
        return []


@pytest.mark.slow
def test_two_ssh_devices_fill_one_table_and_one_killed_midway_leaves_its_share(tmp_path, run_tool):
    needs.check(sshd.available(), 'an OpenSSH server (sshd, ssh, ssh-keygen)',
                'apt-get install openssh-server openssh-client; .ci/run does')
    a, b = _servers(tmp_path)
    path, count = str(tmp_path / 'fleet.csv'), 24
    proc = run_tool('profile_latency', *TINY, f'--table={path}', f'--count={count}',
                    f'--device={a.device},{b.device}', f'--ssh_key={a.client_key}', '--ssh_config=/dev/null',
                    '--ssh_options=StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR',
                    f'--device_python={sys.executable}', f'--device_folder={tmp_path / "device"}',
                    '--retries=1', '--backoff_s=0.2', env={'TF_CPP_MIN_LOG_LEVEL': '3'}, popen=True)
    try:
        deadline = time.time() + 300
        # b goes once both devices have written rows: the test is of a device that leaves mid-run.
        while proc.poll() is None and time.time() < deadline:
            done = _devices(path)
            if len(done) >= 4 and b.device in done:
                break
            time.sleep(0.05)
        b.kill()  # mid-run: b's next architecture is being sent or timed
        killed_at = len(_devices(path))
        out, err = proc.communicate(timeout=300)
    finally:
        a.kill()
        b.kill()
    assert proc.returncode == 0, err
    assert 4 <= killed_at < count
    df = _check_complete(path, count)
    assert (df['latency_ms'] > 0).all() and (df['ref_ms'] > 0).all()
    assert set(df['device']) == {a.device, b.device}  # both timed rows, and every row names its device
    assert (df['device'].iloc[killed_at + 1:] == a.device).all()  # after the kill (and b's row in flight)
    assert f'{b.device} left the fleet' in err and 'Traceback' not in err
    with open(path.replace('.csv', '.meta.json')) as f:
        assert json.load(f)['fleet'] == [a.device, b.device]
