"""The timing agent: what runs on a remote device to time `.tflite` files there.

Its only dependencies are the standard library, numpy and ai-edge-litert (no TensorFlow on the
device), plus measure.py, which the profiler copies beside it: the device times with the very
protocol the host uses. The host talks to one long-lived agent process over its stdin / stdout,
one JSON object a line, after a marker line the host chose (what the remote shell printed before it,
a .bashrc's echo, is not part of the protocol; anything a library prints later goes to stderr):

    {"op": "describe", "threads": 1, "xnnpack": true}   -> the device: CPU, cores, versions
    {"op": "missing", "names": [sha256, ...]}           -> which model files the device lacks
    {"op": "put", "name": sha256, "size": n} + n bytes  -> stores a model file (checked by its hash)
    {"op": "time", "model": sha256, "reference": sha256, "threads": 1, "xnnpack": true,
     "protocol": {"warmup": 5, "runs": 20, ...}, "cache_bytes": n}
                                                        -> Stats of the model and of the reference, and
                                                           the folder after keeping at most n bytes
    {"op": "cache"}                                     -> the model files kept: count and bytes

A file's bytes follow its request line raw (no base64: a C=36 network is ~13 MB). Every answer is
{"ok": true, ...} or {"ok": false, "error": "one line"}. Files are named by their
SHA-256, so a file already on the device (from this run or an earlier one) is never sent again while
it is kept: the folder is a cache, least recently used files removed first beyond `cache_bytes` (the
two files just timed always stay).
"""
import dataclasses
import hashlib
import json
import os
import platform
import sys
import tempfile

import numpy as np

try:
    from ladnas_tf.profiling import measure
except ImportError:  # on the device: measure.py lies beside this file
    import measure

FILES = ('agent.py', 'measure.py')  # what the host copies to the device


def cpu_model(cpuinfo='/proc/cpuinfo'):
    """The CPU as cpuinfo names it, with its family/model and widest vector unit: a VM often reports only
    'AMD EPYC', a name that CPU generations with 2x different latencies share (seen here)."""
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor describes them all
                key, _, value = line.partition(':')
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    name = fields.get('model name') or fields.get('Hardware') or platform.processor() or platform.machine()
    flags = set((fields.get('flags') or fields.get('Features') or '').split())
    isa = next((f for f in ('avx512f', 'avx2', 'avx', 'sve', 'asimd') if f in flags), None)
    detail = [f'family {fields["cpu family"]} model {fields.get("model", "?")}'] if 'cpu family' in fields else []
    detail += [f'part {fields["CPU part"]}'] if 'CPU part' in fields else []
    detail += [isa] if isa else []
    return f'{name} ({", ".join(detail)})' if detail else name


def runtime_version():
    try:
        import importlib.metadata as md
        return md.version('ai-edge-litert')
    except Exception:  # noqa: BLE001 (a missing distribution record must not stop the timing)
        return 'unknown'


def make_runner(model_content, threads=1, xnnpack=True):
    """A zero-argument callable running one inference of a TFLite model on a fixed random input;
    XNNPACK on (the interpreter's default delegate) unless xnnpack=False."""
    from ai_edge_litert import interpreter as litert
    resolver = (litert.OpResolverType.AUTO if xnnpack
                else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp = litert.Interpreter(model_content=model_content, num_threads=threads,
                                experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp['index'], np.random.default_rng(0).random(inp['shape'], np.float32))
    return interp.invoke


def describe():
    return {'device': cpu_model(), 'machine': platform.machine(), 'cores': os.cpu_count(),
            'system': platform.system(), 'python': platform.python_version(),
            'versions': {'ai-edge-litert': runtime_version()}}


class Agent:
    """Serves requests for one model folder; keeps the reference network's interpreter between rows."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self._reference = (None, None)

    def _path(self, name):
        if not (len(name) == 64 and all(c in '0123456789abcdef' for c in name)):
            raise ValueError(f'model name {name[:80]!r} is not a SHA-256')
        return os.path.join(self.folder, name + '.tflite')

    def missing(self, names):
        return {'missing': [n for n in names if not os.path.exists(self._path(n))]}

    def put(self, name, content):
        if hashlib.sha256(content).hexdigest() != name:
            raise ValueError(f'model {name[:12]}: content does not match its SHA-256 (damaged in transfer)')
        # A temporary file of its own: two agents sharing a folder (two "devices" on one host) may send
        # the same model at once. The rename is atomic, so a dropped connection never leaves a half file
        # under the name.
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=name + '.', suffix='.tmp')
        with os.fdopen(fd, 'wb') as f:
            f.write(content)
        os.replace(tmp, self._path(name))
        return {}

    def _files(self):
        """[(last use, name, bytes)] of the folder's model files (and half-sent .tmp ones), oldest first."""
        out = []
        for entry in os.scandir(self.folder):
            if entry.name.endswith(('.tflite', '.tmp')) and entry.is_file():
                info = entry.stat()
                out.append((info.st_mtime_ns, entry.name.split('.')[0], info.st_size, entry.path))
        return sorted(out)

    def cache(self, limit=None, keep=()):
        """The folder's files and bytes, after removing the least recently used beyond `limit` bytes,
        never one in `keep`; 'removed' names those removed."""
        files, removed = self._files(), []
        total = sum(f[2] for f in files)
        for _, name, size, path in files:
            if limit is None or total <= limit:
                break
            if name not in keep:
                os.remove(path)
                total -= size
                removed.append(name)
        return {'files': len(files) - len(removed), 'bytes': total, 'removed': removed}

    def _runner(self, name, threads, xnnpack):
        with open(self._path(name), 'rb') as f:
            return make_runner(f.read(), threads, xnnpack)

    def time(self, model, reference, threads=1, xnnpack=True, protocol=None, cache_bytes=None):
        key = (reference, threads, xnnpack)
        for name in (model, reference):
            os.utime(self._path(name))  # its last use, for the cache's order
        if self._reference[0] != key:
            self._reference = (key, self._runner(reference, threads, xnnpack))
        stats, ref, attempts = measure.measure_with_reference(
            self._runner(model, threads, xnnpack), self._reference[1], **(protocol or {}))
        return {'stats': dataclasses.asdict(stats), 'reference': dataclasses.asdict(ref), 'attempts': attempts,
                'cache': self.cache(cache_bytes, {model, reference})}

    def handle(self, request, stdin):
        op = request.pop('op', None)
        if op == 'put':  # the file's bytes come next on the stream, whatever else is wrong
            content = stdin.read(int(request.pop('size')))
            return self.put(content=content, **request)
        if op == 'describe':
            return describe()
        if op == 'cache':
            return self.cache()
        if op in ('missing', 'time'):
            return getattr(self, op)(**request)
        raise ValueError(f'unknown op {op!r}')


def _own_stdout():
    """The process's stdout for the protocol alone: file descriptor 1 then points at stderr, so a
    library that prints cannot put a line among the answers."""
    out = os.fdopen(os.dup(1), 'wb')
    sys.stdout.flush()
    os.dup2(2, 1)
    return out


def serve(folder, stdin=None, stdout=None, marker=None):
    """Answers requests until the host closes stdin (binary streams: requests are JSON lines); with a
    marker, its line first: the host reads answers only after it."""
    stdin, stdout = stdin or sys.stdin.buffer, stdout or _own_stdout()
    agent = Agent(folder)
    if marker:
        stdout.write(b'\n' + marker + b'\n')  # on a line of its own, whatever the shell left unfinished
        stdout.flush()
    for line in iter(stdin.readline, b''):
        try:
            answer = {'ok': True, **agent.handle(json.loads(line), stdin)}
        except Exception as e:  # noqa: BLE001 (every failure goes back to the host as one line)
            answer = {'ok': False, 'error': f'{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ""}'}
        stdout.write(json.dumps(answer).encode() + b'\n')
        stdout.flush()


if __name__ == '__main__':
    serve(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                             'models'))
