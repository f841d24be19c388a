"""The cpu_tflite_int8 target (full-integer TFLite of the constant graph)."""

import numpy as np
import pytest

from ladnas_tf import export, genotypes, network
from ladnas_tf.graph import constant, convert
from ladnas_tf.graph.setting import Setting
from ladnas_tf.profiling import measure
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
