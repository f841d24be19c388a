"""The README's Python example runs as printed (in a fresh folder: it writes runs/api_search there), and the
README quotes no test count (a number no committed run records goes stale with the next test)."""
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
    assert "'predicted_on'" in latency and "'measured_on'" in latency  # each figure's device named
    assert os.path.isfile(tmp_path / 'runs' / 'api_search' / 'summary.json')


def test_the_readme_quotes_no_test_count(repo_root):
    with open(os.path.join(repo_root, 'README.md')) as f:
        text = f.read()
    assert re.findall(r'\b\d[\d,]* (?:tests|passed|test files|test cases)\b', text) == []
