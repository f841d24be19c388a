"""The adb target with a stand-in `adb` and `benchmark_model` (tests/standins: no phone here): profiling,
partial delegation refused unless allowed, quoted paths, the bounded cache; and the parsers of
benchmark_model's output (timings, delegation) on its documented formats."""
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from ladnas_tf import genotypes
from ladnas_tf.graph import tflite_writer
from ladnas_tf.graph.setting import Setting
from ladnas_tf.profiling import table
from ladnas_tf.profiling.targets import adb as remote

TINY = ['--setting=cifar', '--channels=4', '--cells=2', '--image_size=8', '--warmup=1', '--runs=3',
        '--reference_runs=2', '--workers=1', '--batch=2', '--target=adb', '--adb_serial=emulator-5554',
        '--retries=1', '--backoff_s=0.1']
PROPS = {'ro.product.manufacturer': 'Google', 'ro.product.model': 'Pixel 7', 'ro.board.platform': 'gs201',
         'ro.product.cpu.abi': 'arm64-v8a', 'ro.build.version.release': '14'}


@pytest.fixture
def phone(tmp_path, repo_root):
    """An emulated device folder, the stand-ins on PATH with this Python, benchmark_model pushed."""
    bin_dir, device = tmp_path / 'bin', tmp_path / 'device'
    bin_dir.mkdir()
    device.mkdir()
    for name in ('adb', 'benchmark_model'):
        with open(os.path.join(repo_root, 'tests', 'standins', name)) as f:
            source = f.read().split('\n', 1)[1]
        (bin_dir / name).write_text(f'#!{sys.executable}\n{source}')
        (bin_dir / name).chmod(0o755)
    (device / 'props.json').write_text(json.dumps(PROPS))
    env = {**os.environ, 'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', 'FAKE_ADB_ROOT': str(device),
           'TF_CPP_MIN_LOG_LEVEL': '3'}
    pushed = subprocess.run(['adb', '-s', 'emulator-5554', 'push', str(bin_dir / 'benchmark_model'),
                             '/data/local/tmp/benchmark_model'], env=env, capture_output=True, text=True, timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    return env, device


def _cli(run_tool, env, *args):
    return run_tool('profile_latency', *TINY, *args, env=env)


def _one_error(err):
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and 'Traceback' not in err, err
    return lines[0]


@pytest.mark.slow
def test_profiles_through_adb_and_benchmark_model_with_the_device_described(phone, tmp_path, run_tool):
    env, device = phone
    path = tmp_path / 'phone.csv'
    done = _cli(run_tool, env, f'--table={path}', '--count=2')
    assert done.returncode == 0, done.stderr
    df = table.read(str(path))
    assert len(df) == 2 and df['arch_id'].is_unique
    assert (df['latency_ms'] > 0).all() and (df['ref_ms'] > 0).all() and (df['runs'] == 3).all()
    meta = json.loads((tmp_path / 'phone.meta.json').read_text())
    assert meta['target'] == 'adb' and meta['delegate'] == 'xnnpack'
    assert meta['device'].startswith('Google Pixel 7 (gs201, arm64-v8a, ')
    assert meta['versions']['android'] == '14'
    models = os.listdir(device / 'data' / 'local' / 'tmp' / 'ladnas_tf')
    assert len(models) == 3 and all(m.endswith('.tflite') for m in models)  # 2 + DARTS_V2, no .tmp

    before = path.read_text().splitlines()
    again = _cli(run_tool, env, f'--table={path}', '--count=3')  # resumes: one more row
    assert again.returncode == 0, again.stderr
    after = path.read_text().splitlines()
    assert len(table.read(str(path))) == 3
    assert after[:len(before)] == before  # the two rows kept byte for byte: not timed again


@pytest.mark.slow
def test_a_missing_device_or_binary_is_one_line(phone, tmp_path, run_tool):
    env, device = phone
    wrong = _cli(run_tool, env, f'--table={tmp_path / "a.csv"}', '--count=1', '--adb_serial=R58M000')
    assert wrong.returncode != 0 and "device 'R58M000' not found" in _one_error(wrong.stderr)
    no_binary = _cli(run_tool, env, f'--table={tmp_path / "b.csv"}', '--count=1',
                     '--benchmark_binary=/data/local/tmp/bm')
    assert no_binary.returncode != 0 and 'push TFLite\'s benchmark_model' in _one_error(no_binary.stderr)
    (device / 'offline').write_text('')
    offline = _cli(run_tool, env, f'--table={tmp_path / "c.csv"}', '--count=1')
    assert offline.returncode != 0 and 'device offline' in _one_error(offline.stderr)
    assert not any(p.name.endswith('.csv') for p in tmp_path.iterdir())


@pytest.mark.slow
def test_a_failing_gpu_delegate_stops_with_benchmark_models_own_reason(phone, tmp_path, run_tool):
    env, _ = phone
    done = _cli(run_tool, {**env, 'FAKE_DELEGATION': 'fail'}, f'--table={tmp_path / "gpu.csv"}', '--count=1',
                '--delegate=gpu')
    assert done.returncode != 0
    assert 'Failed to apply GPU delegate' in _one_error(done.stderr)


def _rows_of(path):
    return len(table.read(str(path))) if os.path.exists(path) else 0


@pytest.mark.slow
def test_a_partially_delegated_file_is_refused_unless_allowed_and_then_recorded(phone, tmp_path, run_tool):
    """The stand-in's GPU delegate leaves the CONCATENATION operations to the CPU, as a real one that cannot
    take them does, and benchmark_model carries on: the file would be timed as a GPU row."""
    env, _ = phone
    path = tmp_path / 'gpu.csv'
    refused = _cli(run_tool, env, f'--table={path}', '--count=1', '--delegate=gpu')
    assert refused.returncode != 0
    error = _one_error(refused.stderr)
    # the DARTS_V2 file at this setting: 29 operations, 3 of them CONCATENATION (counted by the stand-in)
    assert 'gpu delegate takes only 26 of 29 operations, 4 partitions' in error
    assert '--allow_partial_delegation' in error and _rows_of(path) == 0
    allowed = _cli(run_tool, env, f'--table={path}', '--count=1', '--delegate=gpu', '--allow_partial_delegation')
    assert allowed.returncode == 0, allowed.stderr
    assert _rows_of(path) == 1
    meta = json.loads((tmp_path / 'gpu.meta.json').read_text())
    assert meta['delegate'] == 'gpu' and meta['partial_delegation'] is True


@pytest.mark.slow
def test_a_fully_delegated_gpu_file_is_timed(phone, tmp_path, run_tool):
    env, _ = phone
    path = tmp_path / 'gpu.csv'
    done = _cli(run_tool, {**env, 'FAKE_DELEGATION': 'full'}, f'--table={path}', '--count=1', '--delegate=gpu')
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / 'gpu.meta.json').read_text())['partial_delegation'] is False


@pytest.mark.slow
def test_a_folder_with_a_space_and_a_bounded_cache(phone, tmp_path, run_tool):
    """Every path in a device shell command is quoted; the folder keeps at most the cache (the file just
    timed and the reference network's always stay)."""
    env, device = phone
    folder = '/data/local/tmp/my models'
    done = _cli(run_tool, env, f'--table={tmp_path / "spaced.csv"}', '--count=4', f'--adb_folder={folder}',
                '--device_cache_mb=0.02')
    assert done.returncode == 0, done.stderr
    files = {p.name: p.stat().st_size for p in (device / 'data' / 'local' / 'tmp' / 'my models').iterdir()}
    reference = tflite_writer.timing_tflite(genotypes.DARTS_V2, **Setting('cifar', 4, 2, 8, 1, 10).network_kwargs())[0]
    assert hashlib.sha256(reference).hexdigest() + '.tflite' in files
    assert len(files) == 2 and all(n.endswith('.tflite') for n in files)  # ~13 kB each: 2 fill 0.02 MB
    assert not (device / 'data' / 'local' / 'tmp' / 'my').exists()  # not split at the space
    said = re.search(r'left on the device: (\d+) model files', done.stdout)
    assert said and int(said.group(1)) == 2


@pytest.mark.parametrize('serial', ['-s', 'a b', 'R58M;reboot', 'R58M\n', '$(id)', '', 'R\u00e9'])
def test_a_hostile_serial_is_refused_in_one_line(serial):
    with pytest.raises(remote.TargetError) as refused:
        remote.AdbTarget(serial)
    assert '\n' not in str(refused.value)


@pytest.mark.parametrize('option,value', [('benchmark_binary', '-x'), ('folder', 'a\nb'), ('folder', '-rf /')])
def test_a_binary_or_folder_a_shell_would_misread_is_refused_in_one_line(option, value):
    with pytest.raises(remote.TargetError) as refused:
        remote.AdbTarget(**{option: value})
    assert '\n' not in str(refused.value)


# ---- what the delegate took, in TFLite's own log formats (counts made up) ----

GPU_PARTIAL = """\
INFO: Loaded model /data/local/tmp/m.tflite
INFO: GPU delegate created.
INFO: Going to apply 1 delegates one after another.
ERROR: Following operations are not supported by GPU delegate:
CONCATENATION: Operation is not supported.
45 operations will run on the GPU, and the remaining 15 operations will run on the CPU.
INFO: Initialized OpenCL-based API.
INFO: Replacing 45 out of 60 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 3 partitions for the \
whole graph.
INFO: Created 3 GPU delegate kernels.
INFO: Explicitly applied GPU delegate, and the model graph will be partially executed by the delegate w/ 3 \
delegate kernels.
"""

XNNPACK_FULL = """\
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Replacing 60 out of 60 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions for the \
whole graph.
INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.
"""

OLDER_GPU = """\
INFO: Created TensorFlow Lite delegate for GPU.
ERROR: Next operations are not supported by GPU delegate:
MEAN: Operation is not supported.
First 58 operations will run on the GPU, and the remaining 2 on the CPU.
INFO: Replacing 58 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 2 partitions.
"""

NOT_TAKEN = ('INFO: Though GPU delegate is explicitly applied, the model graph will not be executed by the '
             'delegate.\n')


def test_a_partial_gpu_delegation_is_parsed_with_its_counts():
    assert remote.parse_delegation(GPU_PARTIAL) == {
        'delegate': 'TfLiteGpuDelegateV2', 'nodes': 45, 'total_nodes': 60, 'partitions': 3, 'kernels': 3,
        'full': False}
    assert remote.delegation_text(remote.parse_delegation(GPU_PARTIAL)) == '45 of 60 operations, 3 partitions'


def test_a_complete_delegation_is_full():
    assert remote.parse_delegation(XNNPACK_FULL) == {
        'delegate': 'TfLiteXNNPackDelegate', 'nodes': 60, 'total_nodes': 60, 'partitions': 1, 'full': True}


def test_older_releases_lines_still_say_it_is_partial():
    assert remote.parse_delegation(OLDER_GPU) == {
        'delegate': 'TfLiteGpuDelegateV2', 'nodes': 58, 'total_nodes': 60, 'partitions': 2, 'full': False}


def test_a_delegate_that_takes_nothing_is_not_full_and_silence_says_nothing():
    assert remote.parse_delegation(NOT_TAKEN) == {'full': False, 'kernels': 0}
    assert remote.parse_delegation(RECENT) == {}  # no delegate lines: unknown, not "full"


@given(st.text(max_size=400))
def test_any_text_gives_a_delegation_whose_counts_it_states(text):
    info = remote.parse_delegation(text)
    for key in ('nodes', 'partitions', 'kernels'):
        if key in info:
            assert str(info[key]) in text


# ---- benchmark_model's output, in its releases' formats (numbers made up) ----

RECENT = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/m.tflite]
INFO: Loaded model /data/local/tmp/m.tflite
INFO: The input model file size (MB): 13.4
INFO: Initialized session in 31.2ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=27 first=25110 curr=18034 min=17801 max=25110 avg=18540.3 std=1433

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=54 first=18210 curr=18101 min=17722 max=19985 avg=18233.9 std=391 p5=17790 median=18160 p95=19012

INFO: Inference timings in us: Init: 31204, First inference: 25110, Warmup (avg): 18540.3, Inference (avg): 18233.9
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to \
the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=28.1 overall=30.4
"""

NO_PERCENTILES = """\
STARTING!
Num runs: [50]
Graph: [/data/local/tmp/m.tflite]
Loaded model /data/local/tmp/m.tflite
Initialized session in 4.1ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=22 first=24020 curr=22410 min=22190 max=24020 avg=22733 std=402

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=22500 curr=22390 min=22100 max=23010 avg=22461.2 std=188

Inference timings in us: Init: 4100, First inference: 24020, Warmup (avg): 22733, Inference (avg): 22461.2
"""

OLDEST = """\
Initialized session in 6.285ms
Running benchmark for at least 1 iterations and at least 0.5 seconds
count=5 first=112000 curr=105000 min=104000 max=112000 avg=108468 std=3000

Running benchmark for at least 50 iterations and at least 1 seconds
Timings (microseconds): count=50 first=92000 curr=91000 min=90000 max=95000 avg=91574.5 std=1020

Average inference timings in us: Warmup: 108468, Init: 6285, no stats: 91574.5
"""

LOGCAT_SUMMARY = ('11-30 10:02:11.123  4242  4242 I tflite  : Inference timings in us: Init: 1007529, '
                  'First inference: 4098, Warmup (avg): 1686.59, Inference (avg): 1687.92\n')

FAILED = """\
INFO: Created TensorFlow Lite delegate for GPU.
ERROR: Following operations are not supported by GPU delegate:
Benchmarking failed.
"""


def test_parses_the_timed_runs_line_not_the_warmups():
    parsed = remote.parse_benchmark_output(RECENT)
    assert parsed['count'] == 54 and parsed['avg'] == 18233.9 and parsed['median'] == 18160
    stats = remote.stats_of_benchmark(parsed)
    assert stats.latency_ms == pytest.approx(18.160) and stats.mean_ms == pytest.approx(18.2339)
    assert stats.cv == pytest.approx(391 / 18233.9) and stats.runs == 54


def test_without_percentiles_the_label_is_the_mean():
    stats = remote.stats_of_benchmark(remote.parse_benchmark_output(NO_PERCENTILES))
    assert stats.latency_ms == pytest.approx(22.4612) and stats.runs == 50
    old = remote.stats_of_benchmark(remote.parse_benchmark_output(OLDEST))
    assert old.latency_ms == pytest.approx(91.5745) and old.std_ms == pytest.approx(1.020)


def test_a_summary_line_alone_still_gives_the_average():
    assert remote.parse_benchmark_output(LOGCAT_SUMMARY) == {'avg': 1687.92}
    assert remote.parse_benchmark_output('Average inference timings in us: Warmup: 5, Init: 2, '
                                         'Inference: 1234.5\n') == {'avg': 1234.5}


def test_a_failed_benchmark_names_its_last_line():
    with pytest.raises(remote.BenchmarkOutputError, match='Benchmarking failed'):
        remote.parse_benchmark_output(FAILED)


@given(count=st.integers(2, 10_000), avg=st.floats(1, 1e7), std=st.floats(0, 1e6), median=st.floats(1, 1e7),
       prefix=st.sampled_from(['', 'INFO: ', 'Timings (microseconds): ', '11-30 I tflite  : ']))
def test_count_lines_round_trip(count, avg, std, median, prefix):
    line = f'{prefix}count={count} first=1 curr=2 min=1 max=3 avg={avg!r} std={std!r} p5=1 median={median!r} p95=3'
    parsed = remote.parse_benchmark_output(f'{prefix}count=3 avg=99 std=1\n{line}\n')
    assert (parsed['count'], parsed['avg'], parsed['std'], parsed['median']) == (count, avg, std, median)


NOISE = st.text(st.characters(blacklist_characters='\n\r'), max_size=60).filter(
    lambda line: not any(key in line for key in ('count=', 'avg', 'Inference', 'ailed', 'ERROR')))


@given(st.text(max_size=300))
def test_any_text_parses_or_fails_with_the_parsers_error(text):
    try:
        parsed = remote.parse_benchmark_output(text)
    except remote.BenchmarkOutputError:
        return
    # Whatever it returns was written in the text: an average the text states, not one made up.
    labelled = re.findall(r'(?:avg=|\(avg\):\s*|(?:Inference|no stats):\s*)([-+.\deE]+)', text)
    stated = [float(m[:k]) for m in labelled for k in range(1, len(m) + 1) if _is_float(m[:k])]
    assert parsed['avg'] > 0 and parsed['avg'] in stated


def _is_float(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


@given(before=st.lists(NOISE, max_size=5), between=st.lists(NOISE, max_size=5), after=st.lists(NOISE, max_size=5),
       warm=st.floats(1, 1e6), timed=st.floats(1, 1e6), median=st.floats(1, 1e6), count=st.integers(2, 1000))
def test_the_timed_runs_line_is_found_among_any_other_lines(before, between, after, warm, timed, median, count):
    """The expectation is built into the text: the warm-up line first, the timed-runs line last."""
    text = '\n'.join([*before, f'count=3 first=1 curr=1 min=1 max=1 avg={warm!r} std=1', *between,
                      f'count={count} first=1 curr=1 min=1 max=1 avg={timed!r} std=2 p5=1 median={median!r} p95=3',
                      *after]) + '\n'
    parsed = remote.parse_benchmark_output(text)
    assert (parsed['count'], parsed['avg'], parsed['median']) == (count, timed, median)
