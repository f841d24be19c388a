"""The adb target with a stand-in `adb` and `benchmark_model` (tests/standins: no phone here), and the
parser of benchmark_model's output on its documented formats."""
import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

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
    done = _cli(run_tool, env, f'--table={tmp_path / "gpu.csv"}', '--count=1', '--delegate=gpu')
    assert done.returncode != 0
    assert 'not supported by GPU delegate' in _one_error(done.stderr)


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
