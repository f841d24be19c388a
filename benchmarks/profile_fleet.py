"""A profiling fleet of two devices against one device, side by side in one run, as rows per hour.

one: the ssh target to one device; two: a fleet (profiling/fleet.py) of two devices of the same model
sharing the stream and the table. By default the devices are two OpenSSH servers this benchmark starts on
127.0.0.1 (tests/sshd.py's set-up), so both "devices" are this machine: they compete for its cores (and
with the conversion workers), which a fleet of separate boards does not. Both paths profile the same
architectures of the same stream with the same protocol, in chunks ordered one, two, two, one so that
drift of the machine's load falls on both alike.

  taskset -c 0,1 python -m benchmarks.profile_fleet --chunk=8 --json=docs/benchmarks/profile_fleet.json
"""
import importlib.util
import json
import os
import sys
import tempfile
import time

from absl import app, flags

from ladnas_tf.graph.setting import Setting
from ladnas_tf.profiling import fleet, profiler as profile, table

FLAGS = flags.FLAGS
flags.DEFINE_integer('chunk', 8, 'Architectures per chunk; each path profiles 2 chunks.', lower_bound=2)
flags.DEFINE_integer('channels', 36, 'Initial channels C (CIFAR setting: 36).', lower_bound=2)
flags.DEFINE_integer('cells', 20, 'Cells (CIFAR setting: 20).', lower_bound=1)
flags.DEFINE_integer('image_size', 32, 'Input height and width.', lower_bound=8)
flags.DEFINE_integer('workers', 2, 'Conversion processes.', lower_bound=1)
flags.DEFINE_integer('batch', 8, 'Architectures converted ahead per timing round.', lower_bound=1)
flags.DEFINE_string('json', None, 'Also write the figures to this JSON file.')

PROTOCOL = dict(warmup=5, runs=20, max_cv=0.05, max_attempts=3, reference_runs=5)
NOTE = ('both devices are OpenSSH servers on 127.0.0.1 of this one machine: the two compete for the same '
        'cores (and with the conversion workers), so the ratio is a floor; a real fleet is separate boards')


def _sshd():
    """tests/sshd.py: the same real OpenSSH set-up the ssh target's tests use."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'sshd.py')
    spec = importlib.util.spec_from_file_location('sshd', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _servers(tmp):
    """Two loopback servers that take one client key."""
    sshd = _sshd()
    folders = [os.path.join(tmp, name) for name in ('sshd_a', 'sshd_b')]
    for folder in folders:
        os.makedirs(folder)
    first = sshd.Server(folders[0])
    for name in ('client_key', 'client_key.pub'):
        with open(os.path.join(first.folder, name), 'rb') as src, open(os.path.join(folders[1], name), 'wb') as dst:
            dst.write(src.read())
    os.chmod(os.path.join(folders[1], 'client_key'), 0o600)
    return first.start(), sshd.Server(folders[1]).start()


def _target(server, tmp):
    return fleet.make_targets('ssh', device=server.device, key_file=server.client_key, ssh_config='/dev/null',
                              ssh_options=['StrictHostKeyChecking=no', 'UserKnownHostsFile=/dev/null',
                                           'LogLevel=ERROR'],
                              python=sys.executable, folder=os.path.join(tmp, 'device'))[0]


def _chunk(timer, count):
    """(seconds of the whole call, seconds from its first row to its last, rows) of run(count)."""
    stamps = []
    start = time.time()
    rows = timer.run(count, seed=123, progress=lambda *_: stamps.append(time.time()))
    return time.time() - start, stamps[-1] - stamps[0], rows


def _rates(seconds, steady, rows, chunks):
    return {'archs': rows, 'seconds': round(seconds, 1), 'archs_per_hour': round(3600 * rows / seconds),
            'steady_archs_per_hour': round(3600 * (rows - chunks) / steady)}


def main(argv):
    del argv
    setting = Setting('cifar', FLAGS.channels, FLAGS.cells, FLAGS.image_size, 1, 10)
    options = dict(workers=FLAGS.workers, batch=FLAGS.batch, **PROTOCOL)
    totals = {'one': [0.0, 0.0, 0], 'two': [0.0, 0.0, 0]}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        servers = _servers(tmp)
        try:
            timers = {'one': profile.Profiler(_target(servers[0], tmp), setting, os.path.join(tmp, 'one.csv'),
                                              **options),
                      'two': profile.Profiler(fleet.Fleet([_target(s, tmp) for s in servers]), setting,
                                              os.path.join(tmp, 'two.csv'), **options)}
            for step, name in enumerate(('one', 'two', 'two', 'one')):
                done = len(timers[name].table)
                figures = _chunk(timers[name], done + FLAGS.chunk)  # the stream's next chunk for this path
                totals[name] = [t + f for t, f in zip(totals[name], figures)]
                load.append(os.getloadavg()[0])
                print(f'chunk {step + 1}/4 {name}: {figures[0]:.1f} s, {figures[2]} rows')
            rows = {k: table.read(p.table.path) for k, p in timers.items()}
        finally:
            for server in servers:
                server.kill()
    result = {k: _rates(*v, chunks=2) for k, v in totals.items()}
    result['ratio_two_vs_one'] = round(result['two']['archs_per_hour'] / result['one']['archs_per_hour'], 3)
    result['steady_ratio_two_vs_one'] = round(result['two']['steady_archs_per_hour']
                                              / result['one']['steady_archs_per_hour'], 3)
    result['rows_per_device_of_two'] = [int((rows['two']['device'] == s.device).sum()) for s in servers]
    result['same_architectures'] = len(set(rows['one']['arch_id']) & set(rows['two']['arch_id']))
    result['median_latency_ms'] = {k: float(df['latency_ms'].median()) for k, df in rows.items()}
    # Two devices on one machine slow each other down; the reference bracket should cancel most of it.
    result['median_latency_over_ref'] = {k: round(float((df['latency_ms'] / df['ref_ms']).median()), 4)
                                         for k, df in rows.items()}
    result['devices_note'] = NOTE
    result['machine'] = {'load_1min_during': [round(x, 2) for x in load],
                         'ssh_devices': '2 x 127.0.0.1 (this machine)'}
    print(json.dumps(result, indent=2))
    if FLAGS.json:
        from benchmarks import save_json
        save_json(FLAGS.json, result, {'setting': setting.key, 'protocol': PROTOCOL, 'chunk': FLAGS.chunk,
                                       'workers': FLAGS.workers, 'batch': FLAGS.batch,
                                       'steady': 'rows after each chunk\'s first, over the time from its '
                                                 'first row to its last (no worker start-up)'})


if __name__ == '__main__':
    app.run(main)
