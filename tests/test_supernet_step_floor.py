"""benchmarks.supernet_step's profile: op times grouped by what they compute, and the kernel floor (the
step's own kernels, pointwise convs at the multiply-adds the math needs)."""
import json
import subprocess
import sys

import pytest

from benchmarks import supernet_step
from ladnas_tf import search_space, supernet
from ladnas_tf.graph import walk


def _per_edge_macs(channels, layers, size, k):
    """(executed, needed) pointwise multiply-adds per image, counted edge by edge from EDGES."""
    executed = needed = 0
    for plan in walk.cell_plans('cifar', channels, layers, size):
        dense = plan.size ** 2 * (plan.c_prev_prev + plan.c_prev) * plan.c  # the cell's preprocessing
        c = plan.c // k
        for source in range(search_space.NUM_INPUTS + search_space.NUM_NODES - 1):
            edges = [edge for edge in search_space.EDGES if edge[0] == source]
            side = -(-plan.size // walk.input_stride(source, plan.reduction))
            executed += 6 * side * side * (len(edges) * c) ** 2  # one block-diagonal matmul per conv
            for _ in edges:
                needed += 6 * side * side * c * c
                if walk.input_stride(source, plan.reduction) == 2:
                    dense += side * side * 2 * c * (c // 2)  # FactorizedReduce: two 1x1 convs to C/2
        executed, needed = executed + dense, needed + dense
    return needed / executed


@pytest.mark.parametrize('setting', [(8, 5, 'darts'), (16, 8, 'darts'), (16, 8, 'pcdarts')])
def test_the_pointwise_share_counts_each_edge_once_and_each_block_diagonal_matmul_whole(setting):
    channels, layers, method = setting
    k = 4 if method == 'pcdarts' else 1
    share = supernet_step._pointwise_needed(supernet.build_supernet(channels, layers, 10, 32, partial_channels=k), 32)
    assert share == pytest.approx(_per_edge_macs(channels, layers, 32, k))
    assert 0.25 < share < 1  # 14 edges in blocks of 4, 4, 3, 2, 1: at most 4x, diluted by the dense convs


def test_op_groups_sort_every_op_and_lose_no_time():
    ops = {'Einsum': 10., 'DepthwiseConv2dNativeBackpropFilter': 5., 'FusedBatchNormGradV3': 4.,
           'MaxPoolGrad': 3., 'ReluGrad': 2., 'SpaceToBatchND': 1., 'AddN': 0.5, 'Unpack': 0.25}
    groups = supernet_step.op_groups(ops)
    assert groups['pointwise conv'] == 10. and groups['depthwise conv'] == 5. and groups['batch norm'] == 4.
    assert groups['pooling'] == 3. and groups['relu'] == 2. and groups['dilation reshuffle'] == 1.
    assert groups['elementwise and reductions'] == 0.5 and groups['other'] == 0.25
    assert sum(groups.values()) == sum(ops.values())
    # the floor: the step's own kernels, the pointwise convs at their needed share, nothing else
    assert supernet_step.kernel_floor(ops, 0.5) == 5. + 4. + 3. + 2. + 10. * 0.5


@pytest.mark.slow
def test_a_profiled_run_reports_the_ops_it_ran(repo_root):
    done = subprocess.run(
        [sys.executable, '-m', 'benchmarks.supernet_step', '--framework', 'tensorflow', '--channels=4',
         '--layers=2', '--batch=2', '--size=8', '--steps=1', '--profile_steps=1', '--threads=1', '--method=darts',
         '--order=first'], cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    ops = record['ops_ms']
    assert {'Einsum', 'DepthwiseConv2dNative', 'FusedBatchNormV3'} <= set(ops)  # oneDNN's prefixes dropped
    assert all(ms > 0 for ms in ops.values())
    assert 0 < record['pointwise_needed'] < 1
