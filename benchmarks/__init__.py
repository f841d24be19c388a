"""Side-by-side speed measurements, run as `python -m benchmarks.<name>` in a clone. With
--json=docs/benchmarks/<name>.json a benchmark writes its figures beside the README's tables they support.

Every figure in the README and docs/ comes from a committed file that says how it was made: each
benchmark writes through save_json (or adds provenance() itself), which records the command, the
commit, the date and the machine; tests/test_provenance.py checks every docs/benchmarks/*.json."""
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time

PROVENANCE = ('command', 'commit', 'date', 'machine')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _versions():
    found = {}
    for name in ('tensorflow-cpu', 'tensorflow', 'keras', 'torch'):  # whichever are installed
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def _commit():
    """HEAD of this clone, '+dirty' when tracked files differ from it (the figures are then not exactly
    that commit's); 'unknown' outside a git clone."""
    try:
        head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=ROOT,
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return 'unknown'
    return head + ('+dirty' if dirty else '')


def _portable_path(path):
    """A path as a committed file may name it: relative inside this clone, scratch/<name> outside it."""
    if not os.path.isabs(path):
        return path
    inside = os.path.relpath(path, ROOT)
    return inside if not inside.startswith('..') else 'scratch/' + os.path.basename(path.rstrip('/'))


def portable(command):
    """`command` with its absolute paths (whole arguments, --flag=values, comma lists) made portable:
    a figure file names no folder of the machine that made it."""
    def arg(word):
        flag, eq, value = word.rpartition('=') if word.startswith('--') else ('', '', word)
        return flag + eq + ','.join(_portable_path(v) for v in value.split(','))
    return ' '.join(arg(word) for word in command.split(' '))


def _portable_commands(record):
    """record with every 'command' inside it portable (merged reports carry their parts' commands)."""
    if isinstance(record, dict):
        return {k: portable(v) if k == 'command' and isinstance(v, str) else _portable_commands(v)
                for k, v in record.items()}
    if isinstance(record, list):
        return [_portable_commands(v) for v in record]
    return record


def _command(argv=None):
    """The command line that ran the benchmark, as a user would type it again."""
    argv = sys.argv if argv is None else argv
    main = sys.modules.get('__main__')
    spec = getattr(main, '__spec__', None)
    module = spec.name.removesuffix('.__main__') if spec is not None and spec.name else None
    program = f'python -m {module}' if module else f'python {argv[0]}'
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else []
    cores = f'taskset -c {",".join(map(str, affinity))} ' if affinity and len(affinity) < os.cpu_count() else ''
    return cores + portable(' '.join([program, *argv[1:]]))


def machine():
    from ladnas_tf.profiling.agent import cpu_model
    return {'device': cpu_model(), 'cores': os.cpu_count(), 'host': platform.node(),
            'system': f'{platform.system()} {platform.release()}'}


def provenance(argv=None):
    """What a figure file must record: the command, the commit, the date (UTC) and the machine."""
    return {'command': _command(argv), 'commit': _commit(), 'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
            'machine': machine()}


def write_json(path, record, indent=2):
    """`record` with provenance() added (its own 'machine' entries kept, e.g. the load during the run)."""
    made = provenance()
    record = {**_portable_commands(record), **{k: v for k, v in made.items() if k != 'machine'},
              'machine': {**made['machine'], **record.get('machine', {})}}
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        f.write(json.dumps(record, indent=indent) + '\n')
    return record


def save_json(path, figures, config):
    """Writes `figures` with what they were measured with: the settings, the versions, and provenance()."""
    return write_json(path, {**figures, 'config': config,
                             'versions': {'python': platform.python_version(), **_versions()}})
