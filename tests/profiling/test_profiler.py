"""Profiling end to end at tiny scale: the CLI, a real kill and resume, the GPU path, repeatability."""
import itertools
import json
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

from ladnas_tf import search_space
from ladnas_tf.graph.setting import Setting
from ladnas_tf.profiling import measure, profiler as profile, table
from ladnas_tf.profiling.targets import adb, base, local, registry as targets, ssh

TINY = ['--setting=cifar', '--channels=4', '--cells=2', '--image_size=8', '--warmup=1', '--runs=3',
        '--workers=1', '--batch=2']


def _cli(run_tool, *args):
    return run_tool('profile_latency', *TINY, *args, env={'TF_CPP_MIN_LOG_LEVEL': '3'}, popen=True)


def _rows(path):
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max(0, sum(1 for _ in f) - 1)


@pytest.mark.slow
def test_killed_run_resumes_without_lost_or_duplicated_rows(tmp_path, run_tool):
    path = str(tmp_path / 'lat.csv')
    proc = _cli(run_tool, f'--table={path}', '--count=40')
    deadline = time.time() + 240
    while _rows(path) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its conversion workers, mid-flight
    proc.wait(timeout=60)
    killed_at = _rows(path)
    assert killed_at >= 3
    done = _cli(run_tool, f'--table={path}', f'--count={killed_at + 3}')
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    df = table.read(path)
    assert len(df) == killed_at + 3
    assert df['arch_id'].is_unique
    expected = [i for i, _ in zip(range(killed_at + 3), (i for i, _ in profile.architectures(0)))]
    assert sorted(df['index']) == expected  # the stream's first architectures, none skipped
    assert (df['ref_ms'] > 0).all()


def test_gpu_target_refuses_cleanly_without_a_gpu(tmp_path, run_tool):
    proc = _cli(run_tool, '--target=gpu', f'--table={tmp_path / "g.csv"}', '--count=1')
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    lines = [l for l in err.strip().splitlines() if l.startswith('error:')]
    assert len(lines) == 1 and "list_physical_devices('GPU') is empty" in lines[0]
    assert 'Traceback' not in err
    assert not os.path.exists(tmp_path / 'g.csv')


@pytest.mark.parametrize('flag,message', [('--target=tpu', 'cpu_tflite|cpu_tflite_int8|gpu'), ('--runs=-1', 'runs')])
def test_bad_flags_are_refused(tmp_path, flag, message, run_tool):
    proc = _cli(run_tool, flag, f'--table={tmp_path / "x.csv"}')
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and message in err and 'Traceback' not in err


def test_device_harness_times_on_cpu(tmp_path):
    """The GPU target's harness, device-agnostic, run on /CPU:0."""
    target = local.DeviceTF('/CPU:0', name='cpu_tf')
    setting = Setting('cifar', 4, 2, 8, 2, 10)
    artifact, params, macs = target.prepare(profile.genotypes.DARTS_V2, setting)
    stats, attempts = measure.measure(target.runner(artifact), warmup=1, runs=3, max_attempts=1)
    assert stats.latency_ms > 0 and stats.runs == 3 and params > 0 and macs > 0
    assert target.describe()['target'] == 'cpu_tf'


@pytest.mark.slow
def test_profiler_protocol_and_repeatability_in_process(tmp_path):
    setting = Setting('cifar', 4, 2, 8, 1, 10)
    profiler = profile.Profiler(local.CpuTFLite(1), setting, str(tmp_path / 'p.csv'), warmup=1, runs=3,
                                reference_runs=2, workers=1, batch=3)
    assert profiler.run(3, seed=5) == 3
    df = table.read(str(tmp_path / 'p.csv'))
    stream = [search_space.genotype_id(g) for _, g in itertools.islice(profile.architectures(5), 3)]
    assert df['arch_id'].tolist() == stream and df['index'].tolist() == [0, 1, 2]  # the seed's stream, in order
    assert (df['runs'] == 3).all() and (df['setting'] == setting.key).all()
    assert (df['latency_ms'] > 0).all() and (df['ref_ms'] > 0).all() and (df['attempts'] >= 1).all()
    summary = profile.repeatability(profiler, 2, seed=0)
    pairs = pd.read_csv(tmp_path / 'p.repeat.csv')
    first = df.set_index('arch_id').loc[pairs['arch_id']]
    assert len(pairs) == 2 and pairs['arch_id'].is_unique
    # The first timing is the table's row, the second a fresh one of the same architecture.
    np.testing.assert_allclose(pairs['first_ms'], first['latency_ms'])
    np.testing.assert_allclose(pairs['first_ref_ms'], first['ref_ms'])
    assert (pairs['second_ms'] > 0).all() and (pairs['second_ref_ms'] > 0).all()
    raw = (pairs['second_ms'] - pairs['first_ms']).abs() / pairs['first_ms']
    assert summary['pairs'] == 2 and summary['raw_mean_rel_diff'] == pytest.approx(raw.mean())
    assert summary == profile.repeatability_summary(pairs)
    assert profile.repeatability(profiler, 2, seed=0) == summary  # resumed: no pair re-timed
    assert len(pd.read_csv(tmp_path / 'p.repeat.csv')) == 2
    assert profiler.run(3, seed=5) == 0  # already complete: nothing re-measured


WRITTEN, CONVERTED = b'ladnas_tf tflite_writer', b'CONVERSION_METADATA'  # each file's own mark


def _profile_artifacts(target, tmp_path, monkeypatch):
    """(the files the profiler timed, the table's metadata) of a 2-row tiny run."""
    setting = Setting('cifar', 4, 2, 8, 1, 10)
    profiler = profile.Profiler(target, setting, str(tmp_path / 'p.csv'), warmup=1, runs=2,
                                reference_runs=1, workers=1, batch=2)
    timed, time = [], profiler.time
    monkeypatch.setattr(profiler, 'time', lambda artifact: timed.append(artifact) or time(artifact))
    assert profiler.run(2, seed=3) == 2
    with open(tmp_path / 'p.meta.json') as f:
        return timed + [profiler._reference], json.load(f)


@pytest.mark.slow
def test_cpu_tflite_rows_are_timed_on_written_files_and_the_metadata_says_so(tmp_path, monkeypatch):
    files, meta = _profile_artifacts(targets.make_target('cpu_tflite'), tmp_path, monkeypatch)
    assert len(files) == 3 and all(WRITTEN in f and CONVERTED not in f for f in files)
    assert meta['tflite_source'] == 'writer'
    assert len(table.read(str(tmp_path / 'p.csv'))) == 2


@pytest.mark.slow
@pytest.mark.parametrize('source, mark', [('writer', WRITTEN), ('converter', CONVERTED)])
def test_int8_rows_are_timed_on_files_of_their_source_and_the_metadata_says_so(tmp_path, monkeypatch, source, mark):
    target = local.CpuTFLiteInt8(1, tflite_source=source)
    files, meta = _profile_artifacts(target, tmp_path, monkeypatch)
    assert len(files) == 3 and all(mark in f for f in files)
    assert meta['tflite_source'] == source and meta['numeric_format'] == 'int8'


def _is_int8(data):
    from ai_edge_litert import schema_py_generated as schema
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    return model.operatorCodes[0].builtinCode == schema.BuiltinOperator.QUANTIZE


@pytest.mark.parametrize('target, source, numeric', [
    (local.CpuTFLite(1), 'writer', 'float32'), (local.CpuTFLite(1, tflite_source='converter'), 'converter',
                                                  'float32'),
    (ssh.SshTarget('user@board'), 'writer', 'float32'), (adb.AdbTarget(), 'writer', 'float32'),
    (local.CpuTFLiteInt8(1), 'writer', 'int8'), (local.CpuTFLiteInt8(1, tflite_source='converter'), 'converter',
                                                   'int8'),
    (ssh.SshTarget('user@board', numeric_format='int8'), 'writer', 'int8'),
    (adb.AdbTarget(numeric_format='int8'), 'writer', 'int8')])
def test_every_target_prepares_the_file_of_its_source_and_format(target, source, numeric):
    """The ssh and adb targets' host side too; params and MACs are the same from either source."""
    setting = Setting('cifar', 4, 2, 8, 1, 10)
    data, params, macs = target.prepare(profile.genotypes.DARTS_V2, setting)
    assert (WRITTEN in data) == (source == 'writer') and target.tflite_source == source
    assert _is_int8(data) == (numeric == 'int8') and target.numeric_format == numeric
    other = base.tflite_file(profile.genotypes.DARTS_V2, setting, 'converter')
    assert (params, macs) == other[1:]


def test_a_remote_target_records_its_numeric_format_and_is_found_again_with_it():
    description = {'target': 'adb', 'serial': 'R58M', 'numeric_format': 'int8'}
    named = [targets.device('adb', serial='R58M')]  # a remote target is reached only at a device the user named
    assert targets.target_of(description, named).numeric_format == 'int8'
    assert targets.target_of({'target': 'adb', 'serial': 'R58M'}, named).numeric_format == 'float32'
    with pytest.raises(targets.TargetError, match="unknown numeric format 'int4'"):
        ssh.SshTarget("user@board", numeric_format="int4")


def test_an_unknown_tflite_source_is_one_line():
    with pytest.raises(base.TargetError, match="unknown TFLite source 'tf'"):
        local.CpuTFLite(1, tflite_source='tf').prepare(profile.genotypes.DARTS_V2, Setting())
