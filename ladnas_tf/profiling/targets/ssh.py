"""The `ssh` target: a board or server with Python, numpy and ai-edge-litert, timed from this host.

One ssh connection carries the whole run: it starts the timing agent (profiling/agent.py, copied over
that same connection with measure.py) and then carries model files and timing requests to it. The device
times with measure.py's protocol, the host's own. The float32 file is made on the host (the workers call
`prepare`, which needs no connection: a target pickles without it), each file is sent once (named by
SHA-256 on the device, kept in a cache of --device_cache_mb there), and a lost connection becomes retries
with backoff, then one line. Rows already written stay in the table. The destination reaches ssh after
'--' and only in the user@host[:port] form; the remote command is quoted word by word.
"""
import collections
import ipaddress
import json
import os
import queue
import re
import secrets
import shlex
import socket
import subprocess
import threading
import time

from ladnas_tf.profiling import agent, measure
from ladnas_tf.profiling.targets.base import (CACHE_OPTION, FORMAT_OPTION, NUMERIC_FORMATS, RETRY_OPTIONS, FileTarget,
                                              Option, Retrying, TargetError, TransportError, checked, numeric_format,
                                              option_values, plain_text, recorded_threads, sha256)

# argv: folder, the connection's marker. The agent's answers start after the marker line: whatever the
# remote shell's startup prints first (a .bashrc that echoes) is skipped, not read as an answer.
BOOTSTRAP = (
    'import json, os, sys\n'
    'folder = os.path.expanduser(sys.argv[1])\n'
    'os.makedirs(folder, exist_ok=True)\n'
    'for name, source in json.loads(sys.stdin.buffer.readline()).items():\n'
    '    with open(os.path.join(folder, name), "w") as f:\n'
    '        f.write(source)\n'
    'sys.path.insert(0, folder)\n'
    'import agent\n'
    'agent.serve(os.path.join(folder, "models"), marker=sys.argv[2].encode())\n')


def agent_sources():
    """The files the device needs, read from this package: {file name: source}."""
    here = os.path.dirname(os.path.abspath(agent.__file__))
    out = {}
    for name in agent.FILES:
        with open(os.path.join(here, name)) as f:
            out[name] = f.read()
    return out


class AgentConnection:
    """One process that runs the agent at the far end of `argv` (ssh ... python -c BOOTSTRAP folder
    marker), spoken to by JSON lines after the agent's marker line. Reader threads keep stdout and stderr
    drained, so a request can time out cleanly."""

    def __init__(self, argv, timeout_s, marker):
        self.argv, self.timeout_s, self.marker = argv, timeout_s, marker.encode()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.lines, self.stderr, self.noise = queue.Queue(), collections.deque(maxlen=20), collections.deque(maxlen=5)
        threading.Thread(target=self._read_answers, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self._send(agent_sources())

    def _read_answers(self):
        started = False
        for line in self.proc.stdout:
            if started:
                self.lines.put(line)
            elif line.rstrip(b'\r\n').endswith(self.marker):  # noise without a newline ends on its line
                started = True
            else:
                self.noise.append(line.decode(errors='replace').strip())  # kept to explain a failure, never parsed
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
        said = self.stderr or [n for n in self.noise if n]
        return said[-1] if said else f'exit status {self.proc.poll()}'

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
        try:
            answer = json.loads(line)
        except ValueError:
            raise TransportError(f'the agent answered with a line that is not JSON: {line[:120]!r}') from None
        if not answer.pop('ok', False):
            raise TargetError(f'the device refused {message.get("op")!r}: {answer.get("error")}')
        return answer

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


_NAME = r'[A-Za-z0-9_][A-Za-z0-9._-]*'  # a user, a host name or address, an ssh config Host
DEVICE = re.compile(rf'(?:({_NAME})@)?({_NAME}|\[[0-9A-Fa-f:.]+\])(?::([0-9]{{1,5}}))?', re.ASCII)


def parse_device(device, what='--device'):
    """'user@host[:port]', host an ssh config alias, a name, an IPv4 or a [bracketed IPv6] address ->
    (destination, port or None). Anything else, a leading '-' (an ssh option) or whitespace among it,
    is refused in one line."""
    match = DEVICE.fullmatch(device) if isinstance(device, str) else None
    if not match:
        raise TargetError(f'{what} {device!r} is not user@host[:port] (letters, digits, ".", "_", "-"; '
                          'not starting with "-")')
    user, host, port = match.groups()
    if port is not None and not 0 < int(port) < 65536:
        raise TargetError(f'{what} {device!r}: port {port} is out of range')
    host = host.strip('[]')
    return (f'{user}@{host}' if user else host), port and int(port)


def remote_word(path):
    """A path as one word of a remote shell command: quoted, a leading '~/' left to the shell to expand."""
    if path.startswith('~/'):
        return '~/' + shlex.quote(path[2:])
    return shlex.quote(path)


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
        CACHE_OPTION, FORMAT_OPTION, *RETRY_OPTIONS)
    # What a named device of this kind carries: where and how to connect (never taken from a file).
    CONNECTION = ('device', 'key_file', 'ssh_config', 'ssh_options', 'python', 'folder', 'connect_timeout_s',
                  'cache_mb')

    def __init__(self, device=None, threads=1, xnnpack=True, request_timeout_s=600, tflite_source='writer',
                 **options):
        if not device:
            raise TargetError("target 'ssh' needs a device: user@host[:port] (--device)")
        o = option_values(self.OPTIONS, {**options, 'device': device}, self.name)
        self.device, self.threads, self.xnnpack, self.tflite_source = device, threads, xnnpack, tflite_source
        self.numeric_format = checked(o['numeric_format'], NUMERIC_FORMATS, 'numeric format')
        self.destination, self.port = parse_device(device)
        self.key_file, self.ssh_config = o['key_file'], o['ssh_config']
        self.ssh_options = tuple(plain_text(x, '--ssh_options entry') for x in o['ssh_options'])
        self.python = plain_text(o['python'], '--device_python')
        self.folder = plain_text(o['folder'], '--device_folder')
        self.cache_bytes = int(o['cache_mb'] * 1e6)
        self.connect_timeout_s, self.request_timeout_s = o['connect_timeout_s'], request_timeout_s
        self.retry = Retrying(f'ssh {device}', o['retries'], o['backoff_s'], self._drop)
        self._connection, self._present, self._description, self._cache = None, set(), None, None

    @classmethod
    def device_of(cls, description):
        """The recorded host, refused in one line if it is not one (a file may hold anything)."""
        host = description.get('host')
        parse_device(host, 'the recorded ssh host')
        return host

    @staticmethod
    def same_device(a, b):
        """The same destination and port (user@host:port and its spellings)."""
        return parse_device(a) == parse_device(b)

    @classmethod
    def from_description(cls, description, options=None):
        """The user's named device (`options`: its connection, python and folder) with the recorded
        threads and file format."""
        if not options:
            raise TargetError(f'the ssh host {description.get("host")!r} is not one you named on this machine')
        return cls(threads=recorded_threads(description), numeric_format=numeric_format(description),
                   **{k: v for k, v in options.items() if v is not None})

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

    def ssh_argv(self, marker):
        argv = ['ssh', '-T', '-o', 'BatchMode=yes', '-o', f'ConnectTimeout={self.connect_timeout_s}',
                '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=3']
        argv += ['-F', self.ssh_config] if self.ssh_config else []
        argv += ['-i', self.key_file] if self.key_file else []
        argv += ['-p', str(self.port)] if self.port else []
        for option in self.ssh_options:
            argv += ['-o', option]
        remote = ' '.join([remote_word(self.python)] + [shlex.quote(a) for a in ('-u', '-c', BOOTSTRAP, self.folder,
                                                                                  marker)])
        return argv + ['--', self.destination, remote]  # '--': the destination is never read as an option

    def _connect(self):
        marker = f'ladnas-agent-{secrets.token_hex(8)}'  # unguessable: no shell noise can look like it
        return AgentConnection(self.ssh_argv(marker), self.connect_timeout_s + 60, marker)

    def _drop(self):
        if self._connection is not None:
            self._connection.close()
        self._connection, self._present = None, set()

    def _call(self, message, timeout_s=None, payload=b''):
        def once():
            if self._connection is None:
                self._connection = self._connect()
            return self._connection.request(message, timeout_s, payload)
        return self.retry(once)

    def check_available(self):
        """Connects and asks the device what it is: an unreachable device fails here, in seconds."""
        try:
            self._connection = self._connect()
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
                               'xnnpack': self.xnnpack, 'protocol': protocol, 'cache_bytes': self.cache_bytes},
                              self.request_timeout_s)
        answer = self.retry(once)
        self._kept(answer['cache'])
        return measure.Stats(**answer['stats']), measure.Stats(**answer['reference']), answer['attempts']

    def _kept(self, cache):
        """The device's cache after a trim: files it removed are sent again when next needed."""
        self._present.difference_update(cache.pop('removed', ()))
        self._cache = (cache['files'], cache['bytes'])

    def device_files(self):
        """(files, bytes) in the device's model folder, asked of the device while connected (a lost
        connection is not reopened for it: the last answer then)."""
        if self._connection is None:
            return self._cache
        try:
            answer = self._connection.request({'op': 'cache'})
        except (TargetError, TransportError):
            return self._cache
        return answer['files'], answer['bytes']

    def close(self):
        self._drop()
