"""A real OpenSSH server on 127.0.0.1 for the ssh target's tests: host and client keys made in a
temporary folder, a free port, started and killed (with its per-connection children) by the test."""
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time

SSHD = shutil.which('sshd') or '/usr/sbin/sshd'


def available():
    return os.path.exists(SSHD) and shutil.which('ssh-keygen') is not None and shutil.which('ssh') is not None


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _children(pid):
    """Every descendant of pid (sshd forks one process, or two, per connection)."""
    parents = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    parents.setdefault(int(f.read().rsplit(')', 1)[1].split()[1]), []).append(int(entry))
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


class Server:
    """`force_command`: sshd's ForceCommand, run by the login shell instead of the client's command (which
    it finds in $SSH_ORIGINAL_COMMAND): a device whose shell prints before running anything."""

    def __init__(self, folder, port=None, force_command=None):
        self.folder, self.port = str(folder), port or free_port()
        self.client_key = os.path.join(self.folder, 'client_key')
        for key in ('host_key', 'client_key'):
            if not os.path.exists(os.path.join(self.folder, key)):
                subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', os.path.join(self.folder, key)],
                               check=True, timeout=30)
        shutil.copy(self.client_key + '.pub', os.path.join(self.folder, 'authorized_keys'))
        self.config = os.path.join(self.folder, 'sshd_config')
        with open(self.config, 'w') as f:
            f.write(f'Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.folder}/host_key\n'
                    f'AuthorizedKeysFile {self.folder}/authorized_keys\nPidFile {self.folder}/sshd.pid\n'
                    'StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n'
                    'PermitRootLogin prohibit-password\n'
                    + (f'ForceCommand {force_command}\n' if force_command else ''))
        self.proc = None

    def start(self):
        os.makedirs('/run/sshd', exist_ok=True)  # sshd's privilege-separation folder
        self.proc = subprocess.Popen([SSHD, '-D', '-e', '-f', self.config], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f'sshd exited: {self.proc.stderr.read().decode()[-500:]}')
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError('sshd did not listen within 20 s')

    def kill(self):
        """The listener and every connection it serves, as a crashed or rebooted device would."""
        if self.proc is None:
            return
        for pid in [self.proc.pid] + _children(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.proc = None

    @property
    def device(self):
        return f'{getpass.getuser()}@127.0.0.1:{self.port}'

    def flags(self):
        """tools.profile_latency flags that reach this server with its own keys only."""
        return [f'--device={self.device}', f'--ssh_key={self.client_key}', '--ssh_config=/dev/null',
                '--ssh_options=StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR']
