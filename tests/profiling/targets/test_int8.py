"""The cpu_tflite_int8 target (full-integer TFLite of the constant graph) and tools.compare_tables."""

import numpy as np
import pandas as pd
import pytest

from ladnas_tf import export, genotypes, network, search_space
from ladnas_tf.graph import constant, convert
from ladnas_tf.graph.setting import Setting
from ladnas_tf.profiling import measure, table
from ladnas_tf.profiling.targets import local, registry as targets

# The tools run as programs: importing them here would define their absl flags a second time.

TINY = Setting('cifar', channels=4, num_cells=3, image_size=8, batch_size=1, num_classes=10)


@pytest.fixture(scope='module')
def int8_file():
    return targets.make_target('cpu_tflite_int8').prepare(genotypes.DARTS_V2, TINY)


def test_int8_graph_has_the_ops_of_the_keras_int8_export(int8_file):
    fast, params, macs = int8_file
    model = network.build_network(genotypes.DARTS_V2, 'cifar', 4, 3, 10, image_size=8)
    rng = np.random.default_rng(0)
    for w in model.weights:  # non-zero BN offsets, as trained (see tests/graph/test_constant.py)
        if w.path.endswith(('beta', 'moving_mean')):
            w.assign(rng.normal(0, 0.1, w.shape))
    keras_int8 = convert.keras_to_tflite(model, 8, int8=True)
    assert export.tflite_op_counts(fast) == export.tflite_op_counts(keras_int8)
    assert (params, macs) == (model.count_eval_params(), model.count_macs())
    types = export.tflite_tensor_types(fast)
    assert types['INT8'] > 10 * types['FLOAT32']  # float only at the input and output
    assert export.tflite_op_counts(fast)['QUANTIZE'] >= 1


def test_int8_target_times_through_the_interpreter(int8_file):
    target = targets.make_target('cpu_tflite_int8')
    assert target.describe()['target'] == 'cpu_tflite_int8'
    stats, attempts = measure.measure(target.runner(int8_file[0]), warmup=1, runs=3, max_attempts=1)
    assert stats.latency_ms > 0 and stats.runs == 3 and attempts == 1


def test_int8_target_is_a_profiler_choice(run_tool):
    assert isinstance(targets.make_target('cpu_tflite_int8', threads=2), local.CpuTFLiteInt8)
    # The flagfile parses against the tool's own flags (--target is an enum of the registry's KINDS).
    code = ('from absl import flags; import tools.profile_latency; '
            'flags.FLAGS(["x", "--flagfile=configs/profile_cpu_int8_cifar.cfg"]); '
            'print(flags.FLAGS.target, flags.FLAGS.table)')
    parsed = run_tool('-c', code, timeout=120)
    assert parsed.returncode == 0, parsed.stderr[-500:]
    assert parsed.stdout.split() == ['cpu_tflite_int8', 'data/cpu_tflite_int8_cifar.csv']


def test_wrong_shaped_representative_images_are_one_line():
    with pytest.raises(constant.GraphError, match=r'N x 8 x 8 x 3.*got shape \(4, 16, 16, 3\)') as e:
        constant.genotype_to_tflite_int8(genotypes.DARTS_V2, representative=np.zeros((4, 16, 16, 3), np.float32),
                                         **TINY.network_kwargs())
    assert '\n' not in str(e.value)


def _table(path, latencies, ids, ref=10.0):
    bits = ''.join(str(int(b)) for b in search_space.encode_cell(genotypes.DARTS_V2.normal))  # a real cell
    rows = [{c: 0 for c in table.COLUMNS} | {'arch_id': i, 'latency_ms': ms, 'ref_ms': ref,
                                             'normal_encoding': bits, 'reduce_encoding': bits}
            for i, ms in zip(ids, latencies)]
    pd.DataFrame(rows, columns=table.COLUMNS).to_csv(path, index=False)
    return table.read(path)


def _compare(run_tool, *paths):
    return run_tool('compare_tables', '--tables=' + ','.join(map(str, paths)), timeout=120)


@pytest.mark.slow
def test_compare_tables_on_common_architectures(tmp_path, run_tool):
    _table(tmp_path / 'f32.csv', [1.0, 2.0, 3.0, 4.0, 9.0], ['a', 'b', 'c', 'd', 'only_f32'])
    _table(tmp_path / 'same.csv', [2.0, 4.0, 6.0, 8.0, 1.0], ['a', 'b', 'c', 'd', 'only_same'])
    _table(tmp_path / 'swap.csv', [1.0, 3.0, 2.0, 4.0], ['a', 'b', 'c', 'd'])
    same = _compare(run_tool, tmp_path / 'f32.csv', tmp_path / 'same.csv')
    assert same.returncode == 0, same.stderr
    assert 'n=4 common' in same.stdout and 'Kendall tau 1.000, Spearman rho 1.000' in same.stdout
    assert 'median ratio second/first 2.000' in same.stdout
    swap = _compare(run_tool, tmp_path / 'f32.csv', tmp_path / 'swap.csv')
    assert 'Kendall tau 0.667' in swap.stdout  # 5 of the 6 pairs keep their order: (5 - 1) / 6


def test_compare_tables_without_common_architectures_is_one_line(tmp_path, run_tool):
    _table(tmp_path / 'a.csv', [1.0, 2.0, 3.0], ['a', 'b', 'c'])
    _table(tmp_path / 'x.csv', [3.0, 6.0], ['x', 'y'])
    bad = _compare(run_tool, tmp_path / 'a.csv', tmp_path / 'x.csv')
    assert bad.returncode == 1 and bad.stderr.strip().count('\n') == 0
    assert 'share 0 arch_id' in bad.stderr
