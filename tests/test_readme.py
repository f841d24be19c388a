"""The README's Python example runs as printed (in a fresh folder: it writes runs/api_search there)."""
import os
import re

import pytest


@pytest.mark.slow
def test_the_readme_python_example_runs(repo_root, run_tool, tmp_path):
    with open(os.path.join(repo_root, 'README.md')) as f:
        example = re.search(r'<!-- python-example -->\n```python\n(.*?)```', f.read(), re.S).group(1)
    assert len(example.strip().splitlines()) <= 6  # five lines and the import
    done = run_tool('-c', example, cwd=tmp_path, env={'TF_CPP_MIN_LOG_LEVEL': '3'})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()  # the search's own lines between the example's two
    predicted, latency = lines[0], lines[-1]
    assert 5 < float(predicted.strip('[]')) < 100  # DARTS_V2 on the shipped CPU predictor, in ms
    assert "'predicted_ms'" in latency and "'measured_ms'" in latency
    assert os.path.isfile(tmp_path / 'runs' / 'api_search' / 'summary.json')
