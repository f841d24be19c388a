"""Side-by-side speed measurements, run as `python -m benchmarks.<name>` in a clone. With
--json=docs/benchmarks/<name>.json a benchmark writes its figures beside the README's tables they support."""
import importlib.metadata
import json
import os
import platform
import time


def _versions():
    found = {}
    for name in ('tensorflow-cpu', 'tensorflow', 'keras', 'torch'):  # whichever are installed
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def save_json(path, figures, config):
    """Writes `figures` with what they were measured with: the settings, the machine, the versions, the date."""
    from ladnas_tf.profiling.agent import cpu_model
    record = {**figures, 'config': config, 'machine': {'device': cpu_model(), 'cores': os.cpu_count()},
              'versions': {'python': platform.python_version(), **_versions()}, 'date': time.strftime('%Y-%m-%d')}
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        f.write(json.dumps(record, indent=2) + '\n')
