"""Every flagfile in configs/ parses with the flags of the tool it is for (a renamed or removed flag,
or a bad enum value, would otherwise surface only when a user runs the experiment)."""
import glob
import os

import pytest

TOOL_OF_PREFIX = {'profile': 'profile_latency', 'lpm': 'train_lpm', 'search': 'search', 'sweep': 'sweep',
                  'train': 'train', 'export': 'export_tflite', 'pipeline': 'pipeline'}


def _configs_by_tool(repo):
    by_tool = {}
    for path in sorted(glob.glob(os.path.join(repo, 'configs', '*.cfg'))):
        prefix = os.path.basename(path).split('_')[0]
        assert prefix in TOOL_OF_PREFIX, f'{path}: no tool known for configs named {prefix}_*'
        by_tool.setdefault(TOOL_OF_PREFIX[prefix], []).append(os.path.relpath(path, repo))
    return by_tool


@pytest.mark.slow
@pytest.mark.parametrize('tool', sorted(set(TOOL_OF_PREFIX.values())))
def test_each_config_parses_with_its_tool(tool, repo_root, run_tool):
    configs = _configs_by_tool(repo_root)[tool]
    # One process per tool: the tools define overlapping flag names, so they cannot share FLAGS.
    script = (f'from absl import flags\nfrom tools import {tool}\n'
              f'for cfg in {configs!r}:\n'
              f'    flags.FLAGS.unparse_flags()\n'
              f'    flags.FLAGS(["x", "--flagfile=" + cfg])\n')
    result = run_tool('-c', script, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
