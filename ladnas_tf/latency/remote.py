"""Remote targets: the network's file made on the host, timed on the device the user deploys to.

`ssh`: a board or server with Python, numpy and ai-edge-litert. One ssh connection carries the whole
run: it starts the timing agent (agent.py, copied over that same connection) and then carries model
files and timing requests to it. The device times with measure.py's protocol, the host's own.

`adb`: an Android phone through the `adb` client and TFLite's `benchmark_model` binary, which the user
pushes once; its printed statistics are parsed (`parse_benchmark_output`).

Both make the file on the host, float32 or with numeric_format='int8' full-integer int8 (the workers
call `prepare`, which needs no connection: a target pickles without it; the file is written directly,
or converted with tflite_source='converter'), send
each file once (files are named by SHA-256 on the device), and turn a lost connection into retries with
backoff, then one line. Rows already written stay in the table.
"""
import collections
import hashlib
import ipaddress
import json
import math
import os
import queue
import re
import shlex
import socket
import subprocess
import tempfile
import threading
import time

from ladnas_tf.bad_input import BadInput
from ladnas_tf.latency import agent, measure
from ladnas_tf.latency.targets import NUMERIC_FORMATS, TargetError, float_tflite


class TransportError(Exception):
    """The connection to the device failed; worth retrying."""


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


class _Retrying:
    """Calls `fn` again after a transport failure, with exponential backoff, then gives up in one line."""

    def __init__(self, what, retries, backoff_s, on_failure):
        self.what, self.retries, self.backoff_s, self.on_failure = what, retries, backoff_s, on_failure

    def __call__(self, fn):
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except TransportError as e:
                self.on_failure()
                if attempt == self.retries:
                    raise TargetError(f'{self.what}: connection lost ({e}) and {self.retries} retries failed; '
                                      'finished rows are kept: rerun the same command to resume') from None
                time.sleep(self.backoff_s * 2 ** attempt)


# ---- ssh ----

BOOTSTRAP = (
    'import json, os, sys\n'
    'folder = os.path.expanduser(sys.argv[1])\n'
    'os.makedirs(folder, exist_ok=True)\n'
    'for name, source in json.loads(sys.stdin.buffer.readline()).items():\n'
    '    with open(os.path.join(folder, name), "w") as f:\n'
    '        f.write(source)\n'
    'sys.path.insert(0, folder)\n'
    'import agent\n'
    'agent.serve(os.path.join(folder, "models"))\n')


def agent_sources():
    """The files the device needs, read from this package: {file name: source}."""
    here = os.path.dirname(os.path.abspath(agent.__file__))
    out = {}
    for name in agent.FILES:
        with open(os.path.join(here, name)) as f:
            out[name] = f.read()
    return out


class AgentConnection:
    """One process that runs the agent at the far end of `argv` (ssh ... python -c BOOTSTRAP), spoken to
    by JSON lines. Reader threads keep stdout and stderr drained, so a request can time out cleanly."""

    def __init__(self, argv, timeout_s):
        self.argv, self.timeout_s = argv, timeout_s
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.lines, self.stderr = queue.Queue(), collections.deque(maxlen=20)
        threading.Thread(target=self._read_answers, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self._send(agent_sources())

    def _read_answers(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # the far end is gone

    def _read_stderr(self):
        for line in self.proc.stderr:
            self._keep_stderr(line)

    def _keep_stderr(self, line):
        text = line.decode(errors='replace').strip()
        if text:
            self.stderr.append(text)

    def _why(self):
        time.sleep(0.2)  # let the reader catch ssh's own last words
        return self.stderr[-1] if self.stderr else f'exit status {self.proc.poll()}'

    def _send(self, message, payload=b''):
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b'\n' + payload)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise TransportError(self._why()) from None

    def request(self, message, timeout_s=None, payload=b''):
        self._send(message, payload)
        try:
            line = self.lines.get(timeout=timeout_s or self.timeout_s)
        except queue.Empty:
            raise TransportError(f'no answer within {timeout_s or self.timeout_s:.0f} s') from None
        if line is None:
            raise TransportError(self._why())
        answer = json.loads(line)
        if not answer.pop('ok', False):
            raise TargetError(f'the device refused {message.get("op")!r}: {answer.get("error")}')
        return answer

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def parse_device(device):
    """'user@host[:port]' (or an ssh config alias) -> (destination, port or None)."""
    match = re.fullmatch(r'((?:[^@\s:]+@)?[^@\s:/]+)(?::(\d{1,5}))?', device or '')
    if not match:
        raise TargetError(f'--device {device!r} is not user@host[:port]')
    port = match.group(2)
    if port is not None and not 0 < int(port) < 65536:
        raise TargetError(f'--device {device!r}: port {port} is out of range')
    return match.group(1), port and int(port)


def _checked_format(numeric_format):
    if numeric_format not in NUMERIC_FORMATS:
        raise TargetError(f'unknown numeric format {numeric_format!r} (known: {", ".join(NUMERIC_FORMATS)})')
    return numeric_format


class SshTarget:
    """cpu_tflite's file (float32, or int8: cpu_tflite_int8's), timed by the agent on an ssh host with
    that host's Python."""
    name = 'ssh'

    def __init__(self, device, threads=1, xnnpack=True, key_file=None, ssh_config=None, ssh_options=(),
                 python='python3', folder='~/.cache/ladnas_tf_agent', connect_timeout_s=10, retries=3,
                 backoff_s=2.0, request_timeout_s=600, tflite_source='writer', numeric_format='float32'):
        self.device, self.threads, self.xnnpack, self.tflite_source = device, threads, xnnpack, tflite_source
        self.numeric_format = _checked_format(numeric_format)
        self.destination, self.port = parse_device(device)
        self.key_file, self.ssh_config, self.ssh_options = key_file, ssh_config, tuple(ssh_options)
        self.python, self.folder = python, folder
        self.connect_timeout_s, self.request_timeout_s = connect_timeout_s, request_timeout_s
        self.retry = _Retrying(f'ssh {device}', retries, backoff_s, self._drop)
        self._connection, self._present, self._description = None, set(), None

    def __getstate__(self):  # conversion workers get the target without its connection
        return {**self.__dict__, '_connection': None, '_present': set(), 'retry': None}

    @property
    def overlaps_conversion(self):
        """Converting on the host while the device times is free, unless the device is this machine."""
        host = self.destination.rsplit('@', 1)[-1]
        try:
            return not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except (OSError, ValueError):
            return False

    def ssh_argv(self):
        argv = ['ssh', '-T', '-o', 'BatchMode=yes', '-o', f'ConnectTimeout={self.connect_timeout_s}',
                '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=3']
        argv += ['-F', self.ssh_config] if self.ssh_config else []
        argv += ['-i', self.key_file] if self.key_file else []
        argv += ['-p', str(self.port)] if self.port else []
        for option in self.ssh_options:
            argv += ['-o', option]
        remote = ' '.join(shlex.quote(a) for a in (self.python, '-u', '-c', BOOTSTRAP, self.folder))
        return argv + [self.destination, remote]

    def _drop(self):
        if self._connection is not None:
            self._connection.close()
        self._connection, self._present = None, set()

    def _call(self, message, timeout_s=None, payload=b''):
        def once():
            if self._connection is None:
                self._connection = AgentConnection(self.ssh_argv(), self.connect_timeout_s + 60)
            return self._connection.request(message, timeout_s, payload)
        return self.retry(once)

    def check_available(self):
        """Connects and asks the device what it is: an unreachable device fails here, in seconds."""
        try:
            self._connection = AgentConnection(self.ssh_argv(), self.connect_timeout_s + 60)
            self._description = self._connection.request({'op': 'describe'})
        except TransportError as e:
            self._drop()
            raise TargetError(f'cannot reach {self.device} over ssh: {e}') from None

    def describe(self):
        if self._description is None:
            self._description = self._call({'op': 'describe'})
        d = self._description
        return {'target': self.name, 'device': f'{d["device"]}, {d["cores"]} cores, {d["machine"]}',
                'machine': d['machine'], 'cores': d['cores'], 'threads': self.threads, 'xnnpack': self.xnnpack,
                'tflite_source': self.tflite_source, 'numeric_format': self.numeric_format,
                'host': self.device, 'device_python': self.python,
                'device_folder': self.folder,
                'versions': {**d['versions'], 'python': d['python']}}

    def prepare(self, genotype, setting):
        return float_tflite(genotype, setting, self.tflite_source, self.numeric_format)

    def _ensure(self, *files):
        """Sends the files the device lacks; names are SHA-256s."""
        names = {_sha256(f): f for f in files}
        unknown = [n for n in names if n not in self._present]
        if unknown:
            for name in self._call({'op': 'missing', 'names': unknown})['missing']:
                self._call({'op': 'put', 'name': name, 'size': len(names[name])}, payload=names[name])
            self._present.update(unknown)
        return [_sha256(f) for f in files]  # one per file, even when two are the same network

    def measure(self, artifact, reference, **protocol):
        def once():
            model, ref = self._ensure(artifact, reference)
            return self._call({'op': 'time', 'model': model, 'reference': ref, 'threads': self.threads,
                               'xnnpack': self.xnnpack, 'protocol': protocol}, self.request_timeout_s)
        answer = self.retry(once)
        return measure.Stats(**answer['stats']), measure.Stats(**answer['reference']), answer['attempts']

    def close(self):
        self._drop()


# ---- adb + benchmark_model ----

class BenchmarkOutputError(BadInput):
    """benchmark_model printed no timing statistics (it failed, or its format is unknown)."""


_NUMBER = r'(-?[0-9.]+(?:[eE][-+]?\d+)?)'


def parse_benchmark_output(text):
    """Timing statistics (microseconds) of TFLite's benchmark_model output.

    Releases print the timed runs' statistics as a `count=N first=.. curr=.. min=.. max=.. avg=.. std=..`
    line (newer ones add `p5=.. median=.. p95=..`; older ones prefix `Timings (microseconds):`) after the
    warm-up's line of the same form, and a summary `Inference timings in us: Init: .., First inference:
    .., Warmup (avg): .., Inference (avg): ..`. The last count line is the timed runs'; without one,
    the summary's average stands alone. Returns {count, avg, std, min, max, median?, ...}."""
    stats = None
    for line in text.splitlines():
        if 'count=' in line and 'avg=' in line:
            fields = dict(re.findall(r'(\w+)=' + _NUMBER, line))
            stats = {k: float(v) for k, v in fields.items()}
    if stats is None:
        match = re.search(r'Inference(?: timings in us:.*?Inference)? \(avg\):\s*' + _NUMBER, text)
        if match is None:
            match = re.search(r'Average inference timings in us:.*?(?:Inference|no stats):\s*' + _NUMBER, text)
        if match is None:
            last = next((l.strip() for l in reversed(text.splitlines()) if l.strip()), 'no output')
            raise BenchmarkOutputError(f'benchmark_model printed no timings (last line: {last[:200]!r})')
        stats = {'avg': float(match.group(1))}
    if not stats.get('avg', 0) > 0:
        raise BenchmarkOutputError(f'benchmark_model printed a non-positive average ({stats.get("avg")})')
    return stats


def stats_of_benchmark(parsed):
    """measure.Stats (ms) from benchmark_model's statistics: the label is its median when printed, else
    its mean (older releases print no percentiles); the IQR is unknown (NaN) without percentiles."""
    avg, std = parsed['avg'] / 1e3, parsed.get('std', math.nan) / 1e3
    median = parsed.get('median', parsed['avg']) / 1e3
    iqr = (parsed['p75'] - parsed['p25']) / 1e3 if {'p25', 'p75'} <= set(parsed) else math.nan
    return measure.Stats(median, avg, std, iqr, std / avg if math.isfinite(std) else math.nan,
                         int(parsed.get('count', 0)))


def _pooled(a, b):
    """One Stats of two equal-protocol reference runs (before and after a row)."""
    n = a.runs + b.runs or 2
    mean = (a.mean_ms * (a.runs or 1) + b.mean_ms * (b.runs or 1)) / ((a.runs or 1) + (b.runs or 1))
    var = ((a.std_ms ** 2 + (a.mean_ms - mean) ** 2) + (b.std_ms ** 2 + (b.mean_ms - mean) ** 2)) / 2
    std = math.sqrt(var) if math.isfinite(var) else math.nan
    return measure.Stats((a.latency_ms + b.latency_ms) / 2, mean, std, math.nan, std / mean, n)


class AdbTarget:
    """An Android device through `adb`, timed by TFLite's benchmark_model (pushed once by the user)."""
    name = 'adb'
    DELEGATES = ('xnnpack', 'gpu', 'none')
    DEVICE_DIR = '/data/local/tmp'  # on the phone: Android's folder that adb may write and execute from
    BENCHMARK_BINARY = DEVICE_DIR + '/benchmark_model'

    def __init__(self, serial=None, threads=1, delegate='xnnpack', adb='adb',
                 benchmark_binary=BENCHMARK_BINARY, folder=DEVICE_DIR + '/ladnas_tf',
                 retries=3, backoff_s=2.0, timeout_s=600, tflite_source='writer', numeric_format='float32'):
        self.numeric_format = _checked_format(numeric_format)
        if delegate not in self.DELEGATES:
            raise TargetError(f'unknown delegate {delegate!r} (known: {", ".join(self.DELEGATES)})')
        self.serial, self.threads, self.delegate = serial, threads, delegate
        self.tflite_source = tflite_source
        self.adb, self.binary, self.folder, self.timeout_s = adb, benchmark_binary, folder, timeout_s
        self.retry = _Retrying(f'adb {serial or "(default device)"}', retries, backoff_s, lambda: None)
        self._present, self._description = set(), None

    def __getstate__(self):
        return {**self.__dict__, 'retry': None}

    overlaps_conversion = True  # a phone is never the host (an emulator on it would be: use ssh then)

    def _run(self, *args, timeout_s=60):
        argv = [self.adb] + (['-s', self.serial] if self.serial else []) + list(args)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        except FileNotFoundError:
            raise TargetError(f'no adb client {self.adb!r} on PATH (install Android platform-tools)') from None
        except subprocess.TimeoutExpired:
            raise TransportError(f'adb {args[0]} gave no answer within {timeout_s} s') from None
        if done.returncode != 0:
            why = (done.stderr.strip() or done.stdout.strip() or f'exit status {done.returncode}').splitlines()
            raise TransportError(why[-1])
        return done.stdout

    def shell(self, command, timeout_s=60):
        return self.retry(lambda: self._run('shell', command, timeout_s=timeout_s))

    def check_available(self):
        try:
            state = self._run('get-state', timeout_s=15).strip()
        except TransportError as e:
            raise TargetError(f'no adb device {self.serial or ""}: {e}'.replace('  ', ' ')) from None
        if state != 'device':
            raise TargetError(f'adb device {self.serial or ""} is {state!r}, not ready')
        if self._run('shell', f'test -x {shlex.quote(self.binary)} && echo yes || echo no').strip() != 'yes':
            raise TargetError(f'{self.binary} is not an executable on the device: push TFLite\'s '
                              f'benchmark_model there first (adb push benchmark_model {self.binary})')
        self._run('shell', f'mkdir -p {self.folder}')  # once, where the model files go

    def describe(self):
        if self._description is None:
            keys = ('ro.product.manufacturer', 'ro.product.model', 'ro.board.platform', 'ro.product.cpu.abi',
                    'ro.build.version.release')
            out = self.shell('; '.join(f'echo "$(getprop {k})"' for k in keys)
                             + '; cat /sys/devices/system/cpu/possible').splitlines()
            props = dict(zip(keys, (l.strip() for l in out)))
            possible = out[len(keys)].strip() if len(out) > len(keys) else ''
            cores = int(possible.split('-')[-1]) + 1 if re.fullmatch(r'\d+(-\d+)?', possible) else None
            self._description = {
                'target': self.name, 'threads': self.threads, 'xnnpack': self.delegate == 'xnnpack',
                'delegate': self.delegate, 'cores': cores, 'serial': self.serial, 'tflite_source': self.tflite_source,
                'numeric_format': self.numeric_format,
                'machine': props['ro.product.cpu.abi'],
                'device': (f'{props["ro.product.manufacturer"]} {props["ro.product.model"]} '
                           f'({props["ro.board.platform"]}, {props["ro.product.cpu.abi"]}, {cores} cores)'),
                'versions': {'android': props['ro.build.version.release'], 'benchmark_model': self.binary}}
        return self._description

    def prepare(self, genotype, setting):
        return float_tflite(genotype, setting, self.tflite_source, self.numeric_format)

    def _ensure(self, data):
        name = _sha256(data)
        remote = f'{self.folder}/{name}.tflite'
        if name not in self._present:
            if self.shell(f'test -f {remote} && echo yes || echo no').strip() != 'yes':
                with tempfile.NamedTemporaryFile(suffix='.tflite') as f:
                    f.write(data)
                    f.flush()
                    self.retry(lambda: self._run('push', f.name, remote + '.tmp', timeout_s=self.timeout_s))
                    self.shell(f'mv {remote}.tmp {remote}')  # a dropped push never leaves a file under the name
            self._present.add(name)
        return remote

    def benchmark(self, remote, warmup, runs):
        flags = [f'--graph={remote}', f'--num_threads={self.threads}', f'--warmup_runs={warmup}',
                 '--warmup_min_secs=0', f'--num_runs={runs}', '--min_secs=0',
                 f'--use_xnnpack={str(self.delegate == "xnnpack").lower()}',
                 f'--use_gpu={str(self.delegate == "gpu").lower()}']
        # The exit status is echoed, so that a failing benchmark (a delegate that cannot take the graph)
        # is told apart from a failing connection, which adb reports by its own exit status.
        out = self.shell(' '.join([self.binary, *flags, '2>&1; echo "exit status $?"']), timeout_s=self.timeout_s)
        status = out.rstrip().rsplit('\n', 1)[-1]
        if status != 'exit status 0':
            lines = [l.strip() for l in out.splitlines()[:-1] if l.strip()] or ['no output']
            why = next((l for l in lines if 'ERROR' in l), lines[-1])  # its first error says most
            raise BenchmarkOutputError(f'benchmark_model failed on {remote} ({status}): {why[:200]}')
        return stats_of_benchmark(parse_benchmark_output(out))

    def measure(self, artifact, reference, warmup=5, runs=20, max_cv=0.05, max_attempts=3, reference_runs=5):
        """measure.measure_with_reference's protocol, each timing a benchmark_model process."""
        measure.check_protocol(warmup, runs, max_attempts)
        model, ref = self._ensure(artifact), self._ensure(reference)
        best = None
        for attempt in range(1, max_attempts + 1):
            before = self.benchmark(ref, 1, reference_runs)
            stats = self.benchmark(model, warmup, runs)
            after = self.benchmark(ref, 1, reference_runs)
            if best is None or stats.cv < best[0].cv:
                best = stats, _pooled(before, after)
            if stats.cv <= max_cv:
                break
        return best[0], best[1], attempt
