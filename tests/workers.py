"""A cluster of real worker processes on loopback ports: TF_CONFIG per worker, the same command for all
(tests of --strategy=multi_worker)."""
import json
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(count):
    """Ports free on 127.0.0.1 now (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(('127.0.0.1', 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_configs(count):
    """TF_CONFIG of each of `count` workers (worker 0 is the chief)."""
    cluster = {'worker': [f'127.0.0.1:{port}' for port in free_ports(count)]}
    return [json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': i}}) for i in range(count)]


def environment(tf_config=None, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ('TF_CONFIG', 'LADNAS_TF_KILL_AT_STEP')}
    env.update(PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2', **extra)
    if tf_config is not None:
        env['TF_CONFIG'] = tf_config
    return env


def run_cluster(args, count=2, timeout=600, extra_env=None, log_dir=None):
    """Runs `python *args` as `count` workers of one cluster; returns their CompletedProcess (returncode,
    stdout, stderr) in task order. extra_env: {task index: {name: value}}. Output goes through files
    (log_dir, default a temporary one), so that a worker that hangs still leaves what it said."""
    import tempfile
    log_dir = log_dir or tempfile.mkdtemp(prefix='workers-')
    os.makedirs(log_dir, exist_ok=True)
    procs = []
    for i, config in enumerate(tf_configs(count)):
        env = environment(config, **(extra_env or {}).get(i, {}))
        out, err = (open(os.path.join(log_dir, f'worker{i}.{kind}'), 'w+') for kind in ('out', 'err'))
        procs.append((subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=out, stderr=err,
                                       text=True), out, err))
    results = []
    try:
        for p, out, err in procs:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            out.seek(0)
            err.seek(0)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out.read(), err.read()))
    finally:
        for p, out, err in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            out.close()
            err.close()
    return results


def run_single(args, timeout=600, **extra):
    """`python *args` as one process, no cluster."""
    return subprocess.run([sys.executable, *args], cwd=REPO, env=environment(None, **extra), capture_output=True,
                          text=True, timeout=timeout)
