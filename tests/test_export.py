"""TFLite export: float32 parity, int8, the written files, and the CLI's handling of bad input."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from ladnas_tf import export, network, search_space
from ladnas_tf.graph import convert

SIZE = 16
# Every candidate op, at stride 1 in the normal cell and at stride 2 in the reduction cell.
ALL_OPS = search_space.make_genotype(
    normal=[('sep_conv_3x3', 0), ('sep_conv_5x5', 1), ('dil_conv_3x3', 0), ('dil_conv_5x5', 2),
            ('max_pool_3x3', 1), ('avg_pool_3x3', 3), ('skip_connect', 0), ('sep_conv_3x3', 4)],
    reduce=[('avg_pool_3x3', 0), ('dil_conv_5x5', 1), ('max_pool_3x3', 0), ('skip_connect', 2),
            ('skip_connect', 1), ('dil_conv_3x3', 3), ('sep_conv_5x5', 0), ('dil_conv_3x3', 1)])


@pytest.fixture(scope='module')
def model():
    """C=4, 3 cells, 16x16; BN statistics made non-trivial so that their folding is tested too."""
    keras.utils.set_random_seed(0)
    m = network.build_network(ALL_OPS, 'cifar', channels=4, num_cells=3, image_size=SIZE, seed=0)
    rng = np.random.default_rng(0)
    for w in m.weights:
        name = w.path.split('/')[-1]
        if name in ('gamma', 'moving_variance'):
            w.assign(rng.uniform(0.5, 1.5, w.shape))
        elif name in ('beta', 'moving_mean'):
            w.assign(rng.normal(0.0, 0.3, w.shape))
    return m


@pytest.fixture(scope='module')
def float_bytes(model):
    return convert.keras_to_tflite(model, SIZE)


@pytest.fixture(scope='module')
def int8_bytes(model):
    # The library hook: a tf.data pipeline of (images, labels) batches, as training code has.
    images = convert.random_images(16, SIZE, seed=5)
    data = tf.data.Dataset.from_tensor_slices((images, np.zeros(16, np.int64))).batch(4)
    return convert.keras_to_tflite(model, SIZE, int8=True, representative=data)


def test_float32_parity(model, float_bytes):
    check = export.parity(model, float_bytes, convert.random_images(8, SIZE, seed=3))
    assert check['images'] == 8 and check['logit_scale'] > 0
    assert check['relative_diff'] <= export.FLOAT_PARITY_TOLERANCE
    assert check['top1_agreement'] == 1.0


def test_float32_graph_is_static_batch_one_and_float(float_bytes):
    ops = export.tflite_op_counts(float_bytes)
    for op in ('CONV_2D', 'DEPTHWISE_CONV_2D', 'MAX_POOL_2D', 'AVERAGE_POOL_2D', 'FULLY_CONNECTED'):
        assert ops[op] > 0, op
    # A dynamic batch would wrap the dilated convs in SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND.
    assert not ops['SPACE_TO_BATCH_ND'] and not ops['BATCH_TO_SPACE_ND']
    types = export.tflite_tensor_types(float_bytes)
    assert types['FLOAT32'] > 0 and not types['INT8']
    logits = export.run_tflite(float_bytes, convert.random_images(2, SIZE))
    assert logits.shape == (2, 10)


def test_int8_export_has_int8_tensors_and_reports_parity(model, int8_bytes, float_bytes):
    types = export.tflite_tensor_types(int8_bytes)
    assert types['INT8'] > types['FLOAT32'] > 0       # float32 only at the interface
    ops = export.tflite_op_counts(int8_bytes)
    assert ops['QUANTIZE'] and ops['DEQUANTIZE'] and ops['CONV_2D'] == export.tflite_op_counts(
        float_bytes)['CONV_2D']
    check = export.parity(model, int8_bytes, convert.random_images(8, SIZE, seed=3))
    assert np.isfinite(check['max_abs_diff']) and 0 <= check['top1_agreement'] <= 1
    # Calibrated on the inputs' distribution, int8 stays within a fraction of the logit scale.
    assert check['relative_diff'] < 0.1


def test_calibration_feed_takes_batches_or_image_label_pairs():
    images = convert.random_images(5, SIZE)
    feed = convert.calibration_feed([images[:3], (images[3:], np.zeros(2))], SIZE)
    steps = [step[0] for step in feed()]
    assert len(steps) == 5 and all(s.shape == (1, SIZE, SIZE, 3) for s in steps)
    np.testing.assert_array_equal(steps[4][0], images[4])
    default = list(convert.calibration_feed(None, SIZE)())
    assert len(default) == convert.CALIBRATION_BATCHES * convert.CALIBRATION_BATCH_SIZE


def test_calibration_feed_groups_images_into_the_batch_size():
    images = convert.random_images(7, SIZE)
    steps = [step[0] for step in convert.calibration_feed([images[:4], images[4:]], SIZE, batch_size=3)()]
    assert [s.shape[0] for s in steps] == [3, 3]  # the seventh image cannot fill a step
    np.testing.assert_array_equal(steps[1], images[3:6])


# ---- the library's export: files, summary, no overwrite, nothing written on failure ----

SUMMARY_FIELDS = {'genotype', 'genotype_id', 'setting', 'channels', 'cells', 'num_classes',
                  'image_size', 'int8', 'params', 'macs', 'file_bytes', 'parity', 'tflite_ops',
                  'conversion_seconds', 'conversion_cpu_seconds', 'versions'}


@pytest.fixture
def reuse_conversion(monkeypatch, float_bytes):
    """Export without converting again: the conversion itself is tested above."""
    monkeypatch.setattr(convert, 'keras_to_tflite', lambda *args, **kwargs: float_bytes)


def test_export_writes_the_model_and_its_summary(model, float_bytes, tmp_path, reuse_conversion):
    out = tmp_path / 'tiny.tflite'
    summary = export.export(model, str(out), parity_images=2)
    assert out.read_bytes() == float_bytes
    on_disk = json.loads((tmp_path / 'tiny.json').read_text())
    assert on_disk == json.loads(json.dumps(summary)) and set(on_disk) == SUMMARY_FIELDS
    assert search_space.parse(on_disk['genotype']) == ALL_OPS
    assert on_disk['genotype_id'] == search_space.genotype_id(ALL_OPS)
    assert (on_disk['setting'], on_disk['channels'], on_disk['cells'], on_disk['image_size']) == (
        'cifar', 4, 3, SIZE)
    assert on_disk['params'] == model.count_eval_params() and on_disk['macs'] == model.count_macs()
    assert on_disk['file_bytes'] == out.stat().st_size and on_disk['int8'] is False
    assert on_disk['parity']['relative_diff'] <= export.FLOAT_PARITY_TOLERANCE
    assert on_disk['tflite_ops']['CONV_2D'] > 0 and on_disk['conversion_seconds'] >= 0
    assert set(on_disk['versions']) == {'tensorflow', 'keras', 'ai_edge_litert'}
    assert sorted(os.listdir(tmp_path)) == ['tiny.json', 'tiny.tflite']   # no temporaries left


def test_export_refuses_to_overwrite_unless_asked(model, tmp_path, reuse_conversion):
    out = tmp_path / 'd.tflite'
    out.write_bytes(b'keep')
    with pytest.raises(export.ExportError, match='d.tflite exists'):
        export.export(model, str(out), parity_images=1)
    assert out.read_bytes() == b'keep' and not (tmp_path / 'd.json').exists()
    (tmp_path / 'e.json').write_text('{}')    # the summary's place is guarded too
    with pytest.raises(export.ExportError, match='e.json exists'):
        export.export(model, str(tmp_path / 'e.tflite'), parity_images=1)
    export.export(model, str(out), parity_images=1, overwrite=True)
    assert out.read_bytes() != b'keep'


def test_export_writes_nothing_when_parity_fails(model, tmp_path, reuse_conversion, monkeypatch):
    monkeypatch.setattr(export, 'FLOAT_PARITY_TOLERANCE', 0.0)
    out = tmp_path / 'd.tflite'
    out.write_bytes(b'keep')
    with pytest.raises(export.ExportError, match='differ from Keras'):
        export.export(model, str(out), parity_images=1, overwrite=True)
    assert out.read_bytes() == b'keep' and sorted(os.listdir(tmp_path)) == ['d.tflite']


def test_export_needs_a_tflite_name_in_an_existing_folder(model, tmp_path):
    with pytest.raises(export.ExportError, match='must end in .tflite'):
        export.export(model, str(tmp_path / 'd.json'))
    with pytest.raises(export.ExportError, match='missing does not exist'):
        export.export(model, str(tmp_path / 'missing' / 'd.tflite'))


# ---- the CLI ----

def run_cli(run_tool, *flags):
    return run_tool('export_tflite', *flags, timeout=300)


def bad_genotype_file(tmp_path, text):
    path = tmp_path / 'bad_genotype.txt'
    path.write_text(text)
    return str(path)


V2 = json.loads(ALL_OPS.to_json())
BAD_GENOTYPES = {
    'malformed JSON': ('{"normal": [["sep_conv_3x3", 0]', 'malformed genotype JSON'),
    'unknown op': (json.dumps({**V2, 'normal': [['conv_9x9', 0]] + V2['normal'][1:]}),
                   "unknown op 'conv_9x9'"),
    'node index out of range': (json.dumps({**V2, 'reduce': V2['reduce'][:7] + [['skip_connect', 7]]}),
                                'input 7 of node 5 is out of range'),
    'none op': (str(ALL_OPS).replace("('max_pool_3x3', 1)", "('none', 1)"), "op 'none' is not allowed"),
    'wrong number of edges': (json.dumps({**V2, 'normal': V2['normal'][:5]}), 'expected 8 edges, got 5'),
    'not a pair': (json.dumps({**V2, 'normal': [['sep_conv_3x3']] * 8}),
                   'normal[0]: expected an (op, input) pair'),
}


@pytest.fixture
def existing_output(tmp_path):
    out = tmp_path / 'd.tflite'
    out.write_bytes(b'keep')
    return out


def assert_one_line_failure(result, message, output):
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and 'Traceback' not in result.stderr, result.stderr
    assert output.read_bytes() == b'keep' and not output.with_suffix('.json').exists()
    assert sorted(os.listdir(output.parent)) in (['d.tflite'], ['bad_genotype.txt', 'd.tflite'])


@pytest.mark.slow
@pytest.mark.parametrize('problem', list(BAD_GENOTYPES))
def test_cli_rejects_bad_genotypes_in_one_line(run_tool, problem, tmp_path, existing_output):
    text, message = BAD_GENOTYPES[problem]
    # --overwrite: the genotype alone must stop it.
    result = run_cli(run_tool, f'--genotype={bad_genotype_file(tmp_path, text)}', f'--output={existing_output}',
                     '--overwrite')
    assert_one_line_failure(result, message, existing_output)


@pytest.mark.parametrize('flags, message', [
    (['--genotype=DARTS_V9'], "'DARTS_V9' is neither a known name"),
    (['--setting=cifar'], '--genotype is required'),
    (['--genotype=DARTS_V2', '--channels=0'], '--channels must be positive'),
    (['--genotype=DARTS_V2', '--setting=mobile', '--overwrite'], "unknown setting 'mobile'"),
    (['--genotype=DARTS_V2'], 'exists (pass --overwrite to replace it)'),
])
@pytest.mark.slow
def test_cli_rejects_bad_flags_in_one_line(run_tool, flags, message, existing_output):
    assert_one_line_failure(run_cli(run_tool, *flags, f'--output={existing_output}'), message, existing_output)


@pytest.mark.slow
def test_cli_exports_and_summarises(run_tool, tmp_path):
    genotype_file = tmp_path / 'all_ops.txt'
    genotype_file.write_text(str(ALL_OPS))     # DARTS's printed form
    out = tmp_path / 'all_ops.tflite'
    result = run_cli(run_tool, f'--genotype={genotype_file}', f'--output={out}', '--channels=4', '--cells=3',
                     f'--image_size={SIZE}', '--parity_images=2')
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / 'all_ops.json').read_text())
    assert set(summary) == SUMMARY_FIELDS and summary['file_bytes'] == out.stat().st_size
    assert search_space.parse(summary['genotype']) == ALL_OPS and summary['params'] > 0
    assert str(out) in result.stdout and 'of the logit scale' in result.stdout
