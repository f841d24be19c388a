"""Profiling through ssh against profiling on this machine, side by side in one run, as archs/hour.

local: the cpu_tflite target (conversion workers, then serial timing in this process).
ssh:   the ssh target to a device (by default an OpenSSH server this benchmark starts on 127.0.0.1, so
       the "device" is this machine and only the transport differs): the same conversion, then each
       file sent over one ssh connection and timed by the agent there.
Both profile the same architectures of the same stream with the same protocol, in chunks ordered
local, ssh, ssh, local so that drift of the machine's load falls on both alike.

  python -m benchmarks.profile_remote --chunk=8 --out=docs/benchmarks/profile_remote.json
"""
import importlib.util
import json
import os
import sys
import tempfile
import time

from absl import app, flags

from ladnas_tf.graph.setting import Setting
from ladnas_tf.profiling import agent, profiler as profile, table
from ladnas_tf.profiling.targets import local, registry as targets

FLAGS = flags.FLAGS
flags.DEFINE_integer('chunk', 8, 'Architectures per chunk; each path profiles 2 chunks.', lower_bound=1)
flags.DEFINE_string('device', None, 'ssh device user@host[:port] (default: a server started on 127.0.0.1).')
flags.DEFINE_string('ssh_key', None, 'Identity file for --device.')
flags.DEFINE_string('out', None, 'Also write the figures to this JSON file.')

SETTING = Setting('cifar', 36, 20, 32, 1, 10)
PROTOCOL = dict(warmup=5, runs=20, max_cv=0.05, max_attempts=3, reference_runs=5)


def _loopback_server(folder):
    """tests/sshd.py's server: the same real OpenSSH set-up the ssh target's tests use."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'sshd.py')
    spec = importlib.util.spec_from_file_location('sshd', path)
    sshd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sshd)
    return sshd.Server(folder).start()


def _ssh_target(folder):
    if FLAGS.device:
        return targets.make_target('ssh', device=FLAGS.device, key_file=FLAGS.ssh_key), None
    server = _loopback_server(folder)
    return targets.make_target('ssh', device=server.device, key_file=server.client_key, ssh_config='/dev/null',
                               ssh_options=['StrictHostKeyChecking=no', 'UserKnownHostsFile=/dev/null',
                                            'LogLevel=ERROR'],
                               python=sys.executable, folder=os.path.join(folder, 'device')), server


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        ssh, server = _ssh_target(tmp)
        ssh.check_available()
        profilers = {'local': profile.Profiler(local.CpuTFLite(1), SETTING, os.path.join(tmp, 'local.csv'),
                                               **PROTOCOL),
                     'ssh': profile.Profiler(ssh, SETTING, os.path.join(tmp, 'ssh.csv'), **PROTOCOL)}
        seconds = {'local': 0.0, 'ssh': 0.0}
        load = [os.getloadavg()[0]]
        for step, name in enumerate(('local', 'ssh', 'ssh', 'local')):
            done = len(profilers[name].table)
            start = time.time()
            profilers[name].run(done + FLAGS.chunk, seed=123)  # the stream's next chunk for this path
            seconds[name] += time.time() - start
            load.append(os.getloadavg()[0])
            print(f'chunk {step + 1}/4 {name}: {time.time() - start:.1f} s')
        rows = {k: table.read(p.table.path) for k, p in profilers.items()}
        ssh.close()
        if server:
            server.kill()
    count = 2 * FLAGS.chunk
    result = {k: {'archs': count, 'seconds': round(s, 1), 'archs_per_hour': round(3600 * count / s)}
              for k, s in seconds.items()}
    result['ratio_ssh_vs_local'] = round(result['ssh']['archs_per_hour'] / result['local']['archs_per_hour'], 3)
    merged = rows['local'].merge(rows['ssh'], on='arch_id', suffixes=('_local', '_ssh'))
    result['same_architectures'] = len(merged)
    result['median_latency_ms'] = {'local': float(merged['latency_ms_local'].median()),
                                   'ssh': float(merged['latency_ms_ssh'].median())}
    result['machine'] = {'device': agent.cpu_model(), 'cores': os.cpu_count(),
                         'load_1min_during': [round(x, 2) for x in load],
                         'ssh_device': FLAGS.device or '127.0.0.1 (this machine)'}
    result['setting'], result['protocol'] = SETTING.key, PROTOCOL
    print(json.dumps(result, indent=2))
    if FLAGS.out:
        from benchmarks import write_json
        write_json(FLAGS.out, result)


if __name__ == '__main__':
    app.run(main)
