"""Every flagfile in configs/ parses with the flags of the tool it is for (a renamed or removed flag,
or a bad enum value, would otherwise surface only when a user runs the experiment)."""
import glob
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL_OF_PREFIX = {'profile': 'profile_latency', 'lpm': 'train_lpm', 'search': 'search', 'sweep': 'sweep',
                  'train': 'train', 'export': 'export_tflite', 'pipeline': 'pipeline'}


def _configs_by_tool():
    by_tool = {}
    for path in sorted(glob.glob(os.path.join(REPO, 'configs', '*.cfg'))):
        prefix = os.path.basename(path).split('_')[0]
        assert prefix in TOOL_OF_PREFIX, f'{path}: no tool known for configs named {prefix}_*'
        by_tool.setdefault(TOOL_OF_PREFIX[prefix], []).append(os.path.relpath(path, REPO))
    return by_tool


@pytest.mark.slow
@pytest.mark.parametrize('tool,configs', sorted(_configs_by_tool().items()))
def test_each_config_parses_with_its_tool(tool, configs):
    # One process per tool: the tools define overlapping flag names, so they cannot share FLAGS.
    script = (f'from absl import flags\nfrom tools import {tool}\n'
              f'for cfg in {configs!r}:\n'
              f'    flags.FLAGS.unparse_flags()\n'
              f'    flags.FLAGS(["x", "--flagfile=" + cfg])\n')
    result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
