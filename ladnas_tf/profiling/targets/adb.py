"""The `adb` target: an Android phone through the `adb` client and TFLite's `benchmark_model` binary,
which the user pushes once; its printed statistics are parsed (`parse_benchmark_output`).

The float32 file is made on the host, sent once (named by SHA-256 on the device) and kept in a bounded
cache there, and a failing adb command becomes retries with backoff, then one line. Rows already written
stay in the table. Every path in a device shell command is quoted. What the delegate took of each file
is parsed (`parse_delegation`); a partially delegated file (a mixed CPU/GPU graph) is refused unless the
user allows it.
"""
import collections
import math
import re
import shlex
import subprocess
import tempfile

from ladnas_tf.bad_input import BadInput
from ladnas_tf.profiling import measure
from ladnas_tf.profiling.targets.base import (CACHE_OPTION, FORMAT_OPTION, NUMERIC_FORMATS, RETRY_OPTIONS, FileTarget,
                                              Option, Retrying, TargetError, TransportError, checked, numeric_format,
                                              option_values, plain_text, recorded_threads, sha256)


class BenchmarkOutputError(BadInput):
    """benchmark_model printed no timing statistics (it failed, or its format is unknown)."""


class PartialDelegationError(TargetError):
    """The delegate took part of a file only: the rest would run on the CPU, timed as the delegate's."""


SERIAL = re.compile(r'[A-Za-z0-9_.][A-Za-z0-9_.:-]*', re.ASCII)  # adb devices' serials, host:port included


def checked_serial(serial, what='--adb_serial'):
    """`serial` (None: the only device) if it is one adb can name, else a one-line TargetError."""
    if serial is not None and not (isinstance(serial, str) and SERIAL.fullmatch(serial)):
        raise TargetError(f'{what} {serial!r} is not an adb serial (letters, digits, ".", "_", ":", "-"; '
                          'not starting with "-")')
    return serial


# What the interpreter and benchmark_model print about a delegate (TFLite's log lines; older releases
# print the first Replacing form, newer ones the second; the GPU delegate prints its own summary).
_REPLACING = (re.compile(r'Replacing (?P<nodes>\d+) out of (?P<total>\d+) node\(s\) with delegate \((?P<name>[^)]*)\) '
                         r'node, yielding (?P<partitions>\d+) partitions'),
              re.compile(r'Replacing (?P<nodes>\d+) node\(s\) with delegate \((?P<name>[^)]*)\) node, yielding '
                         r'(?P<partitions>\d+) partitions'))
_GPU_SPLIT = re.compile(r'(?:First )?(?P<nodes>\d+) operations will run on the GPU, and the remaining (?P<rest>\d+) '
                        r'(?:operations will run )?on the CPU')
_APPLIED = re.compile(r'Explicitly applied (?P<name>\S+) delegate, and the model graph will be '
                      r'(?P<how>completely|partially) executed by the delegate'
                      r'(?: w/ (?P<kernels>\d+) delegate kernels)?')
_NOT_APPLIED = re.compile(r'Though (?P<name>\S+) delegate is explicitly applied, the model graph will not be executed')


def parse_delegation(text):
    """What the delegate took of the graph, from benchmark_model's output: {delegate, nodes, total_nodes,
    partitions, kernels, full}; a key is absent when the output does not say it; {} when it says nothing."""
    info = {}
    for line in text.splitlines():
        for pattern in _REPLACING:
            m = pattern.search(line)
            if m:
                info.update(delegate=m['name'], nodes=int(m['nodes']), partitions=int(m['partitions']),
                            **({'total_nodes': int(m['total'])} if 'total' in m.groupdict() else {}))
                break
        m = _GPU_SPLIT.search(line)
        if m:
            info.setdefault('total_nodes', int(m['nodes']) + int(m['rest']))
        m = _APPLIED.search(line)
        if m:
            info.update(full=m['how'] == 'completely', **({'kernels': int(m['kernels'])} if m['kernels'] else {}))
        if _NOT_APPLIED.search(line):
            info.update(full=False, kernels=0)
    if 'full' not in info and {'nodes', 'total_nodes', 'partitions'} <= set(info):
        info['full'] = info['nodes'] == info['total_nodes'] and info['partitions'] == 1
    return info


def delegation_text(info):
    """'45 of 60 operations, 3 partitions' (what is known of it)."""
    nodes = f'{info["nodes"]} of {info.get("total_nodes", "?")} operations' if 'nodes' in info else 'part of the graph'
    parts = [nodes] + ([f'{info["partitions"]} partitions'] if 'partitions' in info else [])
    return ', '.join(parts)


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


class AdbTarget(FileTarget):
    """An Android device through `adb`, timed by TFLite's benchmark_model (pushed once by the user)."""
    name = 'adb'
    DELEGATES = ('xnnpack', 'gpu', 'none')
    DEVICE_DIR = '/data/local/tmp'  # on the phone: Android's folder that adb may write and execute from
    OPTIONS = (
        Option('serial', 'adb_serial', None, 'adb: the device serial (adb devices); default: the only one.'),
        Option('adb', 'adb', 'adb', 'adb: the adb client.'),
        Option('benchmark_binary', 'benchmark_binary', DEVICE_DIR + '/benchmark_model',
               'adb: benchmark_model on the device.'),
        Option('folder', 'adb_folder', DEVICE_DIR + '/ladnas_tf', 'adb: where the model files go on the device.'),
        Option('delegate', 'delegate', 'xnnpack', 'adb: benchmark_model\'s delegate.', 'enum', DELEGATES),
        Option('allow_partial_delegation', 'allow_partial_delegation', False,
               'adb: time a file the delegate takes only part of (the rest runs on the CPU); refused by default.',
               'bool'),
        CACHE_OPTION, FORMAT_OPTION, *RETRY_OPTIONS)
    # What a named device of this kind carries: which device and how to reach it (never taken from a file).
    CONNECTION = ('serial', 'adb', 'benchmark_binary', 'folder', 'cache_mb', 'allow_partial_delegation')

    def __init__(self, serial=None, threads=1, timeout_s=600, tflite_source='writer', **options):
        o = option_values(self.OPTIONS, {**options, 'serial': serial}, self.name)
        self.serial, self.threads = checked_serial(serial), threads
        self.delegate = checked(o['delegate'], self.DELEGATES, 'delegate')
        self.allow_partial = bool(o['allow_partial_delegation'])
        self.tflite_source = tflite_source
        self.numeric_format = checked(o['numeric_format'], NUMERIC_FORMATS, 'numeric format')
        self.adb, self.timeout_s = o['adb'], timeout_s
        self.binary = plain_text(o['benchmark_binary'], '--benchmark_binary')
        self.folder = plain_text(o['folder'], '--adb_folder').rstrip('/') or '/'
        self.cache_bytes = int(o['cache_mb'] * 1e6)
        self.retry = Retrying(f'adb {serial or "(default device)"}', o['retries'], o['backoff_s'], lambda: None)
        self._present, self._description, self._cache = set(), None, None
        self.delegations = {}  # device path -> what the delegate took of it (parse_delegation)
        self.last_delegation = {}  # that of the last file measured

    @classmethod
    def device_of(cls, description):
        """The recorded serial ('' for the only device), refused in one line if it is not one."""
        return checked_serial(description.get('serial'), 'the recorded adb serial') or ''

    @classmethod
    def from_description(cls, description, options=None):
        """The user's named device (`options`) with the recorded threads, delegate and file format."""
        if options is None:
            raise TargetError(f'the adb device {description.get("serial")!r} is not one you named on this machine')
        recorded = {'delegate': description.get('delegate'), 'numeric_format': numeric_format(description)}
        chosen = {**options, **recorded}  # how it was timed is the file's; where and with what, the user's
        return cls(threads=recorded_threads(description), **{k: v for k, v in chosen.items() if v is not None})

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
        self._run('shell', f'mkdir -p {shlex.quote(self.folder)}')  # once, where the model files go

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
                'numeric_format': self.numeric_format, 'partial_delegation': self.allow_partial,
                'machine': props['ro.product.cpu.abi'],
                'device': (f'{props["ro.product.manufacturer"]} {props["ro.product.model"]} '
                           f'({props["ro.board.platform"]}, {props["ro.product.cpu.abi"]}, {cores} cores)'),
                'versions': {'android': props['ro.build.version.release'], 'benchmark_model': self.binary}}
        return self._description

    # ---- the device's files: sent once, kept in a bounded cache, least recently used removed first ----

    def _listing(self):
        """{name: bytes} of the model files (and half-pushed .tmp ones) in the folder, oldest first."""
        folder = shlex.quote(self.folder)
        out = self.shell(f'cd {folder} && for f in *.tflite *.tmp; do [ -f "$f" ] && stat -c "%Y %s %n" "$f"; '
                         'done; true')
        rows = sorted((line.split(' ', 2) for line in out.splitlines() if re.fullmatch(r'\d+ \d+ \S+', line)),
                      key=lambda row: int(row[0]))
        return collections.OrderedDict((name, int(size)) for _, size, name in rows)

    def _ensure(self, data):
        name = sha256(data)
        remote = f'{self.folder}/{name}.tflite'
        if self._cache is None:
            self._cache = self._listing()
        if name not in self._present:
            if f'{name}.tflite' not in self._cache:
                with tempfile.NamedTemporaryFile(suffix='.tflite') as f:
                    f.write(data)
                    f.flush()
                    self.retry(lambda: self._run('push', f.name, remote + '.tmp', timeout_s=self.timeout_s))
                    # a dropped push never leaves a file under the name
                    self.shell(f'mv {shlex.quote(remote + ".tmp")} {shlex.quote(remote)}')
            self._present.add(name)
        self._cache[f'{name}.tflite'] = len(data)
        self._cache.move_to_end(f'{name}.tflite')  # the most recently used
        return remote

    def _trim(self, keep):
        """Removes the least recently used files beyond the cache's bytes, never those in `keep`."""
        total, gone = sum(self._cache.values()), []
        for name in list(self._cache):
            if total <= self.cache_bytes:
                break
            if name.split('.')[0] not in keep:
                total -= self._cache.pop(name)
                gone.append(name)
        if gone:
            self.shell(f'cd {shlex.quote(self.folder)} && rm -f ' + ' '.join(shlex.quote(n) for n in gone))
            self._present.difference_update(n.split('.')[0] for n in gone)

    def device_files(self):
        """(files, bytes) in the device's model folder, as this target left it."""
        return None if self._cache is None else (len(self._cache), sum(self._cache.values()))

    # ---- timing ----

    def benchmark(self, remote, warmup, runs):
        flags = [f'--graph={remote}', f'--num_threads={self.threads}', f'--warmup_runs={warmup}',
                 '--warmup_min_secs=0', f'--num_runs={runs}', '--min_secs=0',
                 f'--use_xnnpack={str(self.delegate == "xnnpack").lower()}',
                 f'--use_gpu={str(self.delegate == "gpu").lower()}']
        # The exit status is echoed, so that a failing benchmark (a delegate that cannot take the graph)
        # is told apart from a failing connection, which adb reports by its own exit status.
        command = ' '.join(shlex.quote(a) for a in (self.binary, *flags))
        out = self.shell(f'{command} 2>&1; echo "exit status $?"', timeout_s=self.timeout_s)
        status = out.rstrip().rsplit('\n', 1)[-1]
        if status != 'exit status 0':
            lines = [l.strip() for l in out.splitlines()[:-1] if l.strip()] or ['no output']
            why = next((l for l in lines if 'ERROR' in l), lines[-1])  # its first error says most
            raise BenchmarkOutputError(f'benchmark_model failed on {remote} ({status}): {why[:200]}')
        self._check_delegation(remote, parse_delegation(out))
        return stats_of_benchmark(parse_benchmark_output(out))

    def _check_delegation(self, remote, info):
        """Records what the delegate took of the file; refuses a partial take unless allowed."""
        self.delegations[remote] = info
        if self.delegate != 'none' and info.get('full') is False and not self.allow_partial:
            raise PartialDelegationError(
                f'the {self.delegate} delegate takes only {delegation_text(info)} of {remote.rsplit("/", 1)[-1]}: '
                'the rest would run on the CPU and be timed as the delegate\'s (--allow_partial_delegation '
                'times it anyway)')

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
        self.last_delegation = self.delegations.get(model, {})
        self._trim({sha256(artifact), sha256(reference)})
        return best[0], best[1], attempt
