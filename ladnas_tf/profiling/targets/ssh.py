"""The `ssh` target: a board or server with Python, numpy and ai-edge-litert, timed from this host.

One ssh connection carries the whole run: it starts the timing agent (profiling/agent.py, copied over
that same connection with measure.py) and then carries model files and timing requests to it. The device
times with measure.py's protocol, the host's own. The float32 file is made on the host (the workers call
`prepare`, which needs no connection: a target pickles without it), each file is sent once (named by
SHA-256 on the device), and a lost connection becomes retries with backoff, then one line. Rows already
written stay in the table.
"""
import collections
import ipaddress
import json
import os
import queue
import re
import shlex
import socket
import subprocess
import threading
import time

from ladnas_tf.profiling import agent, measure
from ladnas_tf.profiling.targets.base import (FORMAT_OPTION, NUMERIC_FORMATS, RETRY_OPTIONS, FileTarget, Option,
                                              Retrying, TargetError, TransportError, checked, numeric_format,
                                              option_values, sha256)

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


class SshTarget(FileTarget):
    """cpu_tflite's file (float32, or int8: cpu_tflite_int8's), timed by the agent on an ssh host with
    that host's Python."""
    name = 'ssh'
    OPTIONS = (
        Option('device', 'device', None, 'ssh: user@host[:port] (or a Host of your ssh config).'),
        Option('key_file', 'ssh_key', None, 'ssh: identity (private key) file.'),
        Option('ssh_config', 'ssh_config', None, 'ssh: config file (default: ssh\'s own, ~/.ssh/config).'),
        Option('ssh_options', 'ssh_options', (), 'ssh: extra -o options, e.g. StrictHostKeyChecking=accept-new.',
               'list'),
        Option('python', 'device_python', 'python3', 'ssh: the Python on the device (with numpy and ai-edge-litert).'),
        Option('folder', 'device_folder', '~/.cache/ladnas_tf_agent', 'ssh: where the agent and model files live.'),
        Option('connect_timeout_s', 'connect_timeout_s', 10, 'ssh: seconds to wait for the connection.', 'integer',
               lower_bound=1),
        FORMAT_OPTION, *RETRY_OPTIONS)

    def __init__(self, device=None, threads=1, xnnpack=True, request_timeout_s=600, tflite_source='writer',
                 **options):
        if not device:
            raise TargetError("target 'ssh' needs a device: user@host[:port] (--device)")
        o = option_values(self.OPTIONS, {**options, 'device': device}, self.name)
        self.device, self.threads, self.xnnpack, self.tflite_source = device, threads, xnnpack, tflite_source
        self.numeric_format = checked(o['numeric_format'], NUMERIC_FORMATS, 'numeric format')
        self.destination, self.port = parse_device(device)
        self.key_file, self.ssh_config, self.ssh_options = o['key_file'], o['ssh_config'], tuple(o['ssh_options'])
        self.python, self.folder = o['python'], o['folder']
        self.connect_timeout_s, self.request_timeout_s = o['connect_timeout_s'], request_timeout_s
        self.retry = Retrying(f'ssh {device}', o['retries'], o['backoff_s'], self._drop)
        self._connection, self._present, self._description = None, set(), None

    @classmethod
    def from_description(cls, description):
        """Reached again at the recorded host with its recorded Python and folder, the user's ssh defaults."""
        recorded = {'python': description.get('device_python'), 'folder': description.get('device_folder'),
                    'numeric_format': numeric_format(description)}
        return cls(description.get('host'), description.get('threads', 1),
                   **{k: v for k, v in recorded.items() if v is not None})

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
                'tflite_source': self.tflite_source, 'numeric_format': self.numeric_format, 'host': self.device,
                'device_python': self.python, 'device_folder': self.folder,
                'versions': {**d['versions'], 'python': d['python']}}

    def _ensure(self, *files):
        """Sends the files the device lacks; names are SHA-256s."""
        names = {sha256(f): f for f in files}
        unknown = [n for n in names if n not in self._present]
        if unknown:
            for name in self._call({'op': 'missing', 'names': unknown})['missing']:
                self._call({'op': 'put', 'name': name, 'size': len(names[name])}, payload=names[name])
            self._present.update(unknown)
        return [sha256(f) for f in files]  # one per file, even when two are the same network

    def measure(self, artifact, reference, **protocol):
        def once():
            model, ref = self._ensure(artifact, reference)
            return self._call({'op': 'time', 'model': model, 'reference': ref, 'threads': self.threads,
                               'xnnpack': self.xnnpack, 'protocol': protocol}, self.request_timeout_s)
        answer = self.retry(once)
        return measure.Stats(**answer['stats']), measure.Stats(**answer['reference']), answer['attempts']

    def close(self):
        self._drop()


