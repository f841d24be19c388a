"""graph.tflite_int8_writer writes the converter's full-integer int8 file in structure (operators in
order, options, versions, tensor shapes and types, quantization layout, metadata; values aside), and the
interpreter runs it, on published and random genotypes at a tiny scale of both settings (the full
comparison: benchmarks/tflite_writer_equivalence.py --format=int8, docs/tflite_int8_writer_equivalence.md)."""
import functools

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from benchmarks.tflite_writer_equivalence import first_difference, run, structure
from ladnas_tf import genotypes, search_space
from ladnas_tf.bad_input import BadInput
from ladnas_tf.graph import tflite_int8_writer
from ladnas_tf.graph.setting import Setting

# The float32 writer's tiny settings: ImageNet at 224 px keeps the real map sizes 28, 14 and 7.
CIFAR = Setting('cifar', 8, 3, 16, 1, 10)
IMAGENET = Setting('imagenet', 4, 5, 224, 1, 10)
SETTINGS = {'cifar': CIFAR, 'imagenet': IMAGENET}
RANDOM = [search_space.sample_genotype(np.random.default_rng(seed)) for seed in range(3)]
GENOTYPES = {**genotypes.NAMED, **{f'random_{i}': g for i, g in enumerate(RANDOM)}}


@functools.lru_cache(maxsize=None)
def files(name, setting):
    """(converter's file, params, MACs), (written file, params, MACs): each made once per module."""
    from ladnas_tf.graph import constant
    kwargs = SETTINGS[setting].network_kwargs()
    return (constant.genotype_to_tflite_int8(GENOTYPES[name], **kwargs),
            tflite_int8_writer.timing_tflite_int8(GENOTYPES[name], **kwargs))


@pytest.mark.parametrize('name', sorted(GENOTYPES))
@pytest.mark.parametrize('setting', sorted(SETTINGS))
def test_structure_is_the_converters_and_the_file_runs(name, setting):
    (converted, *counts), (written, *written_counts) = files(name, setting)
    assert first_difference(structure(converted), structure(written)) == ''
    assert written_counts == counts
    s = SETTINGS[setting]
    logits = run(written, np.random.default_rng(0).standard_normal(
        (s.batch_size, s.image_size, s.image_size, 3)).astype(np.float32))
    assert logits.shape == (s.batch_size, s.num_classes) and np.isfinite(logits).all()


def test_int8_layout():
    """What the structure comparison relies on, stated: float32 in and out through QUANTIZE and
    DEQUANTIZE, int8 weights per output channel with zero points 0, int32 biases of scale input x
    weight scale, per-tensor int8 activations."""
    written = files('DARTS_V2', 'cifar')[1][0]
    model = schema.ModelT.InitFromPackedBuf(written, 0)
    graph = model.subgraphs[0]
    kinds = [model.operatorCodes[op.opcodeIndex].builtinCode for op in graph.operators]
    assert kinds[0] == schema.BuiltinOperator.QUANTIZE and kinds[-1] == schema.BuiltinOperator.DEQUANTIZE
    assert graph.tensors[graph.inputs[0]].type == graph.tensors[graph.outputs[0]].type == schema.TensorType.FLOAT32
    conv = next(op for op, kind in zip(graph.operators, kinds) if kind == schema.BuiltinOperator.DEPTHWISE_CONV_2D)
    x, w, b = (graph.tensors[i] for i in conv.inputs)
    assert (w.type, b.type) == (schema.TensorType.INT8, schema.TensorType.INT32)
    assert len(w.quantization.scale) == w.shape[3] and w.quantization.quantizedDimension == 3
    assert not w.quantization.zeroPoint.any()
    np.testing.assert_allclose(b.quantization.scale, x.quantization.scale[0] * w.quantization.scale, rtol=1e-6)
    assert len(graph.tensors[conv.outputs[0]].quantization.scale) == 1


def test_seed_changes_only_values():
    kwargs = CIFAR.network_kwargs()
    written = files('DARTS_V2', 'cifar')[1][0]
    other = tflite_int8_writer.timing_tflite_int8(genotypes.DARTS_V2, **kwargs, seed=1)[0]
    assert other != written
    assert first_difference(structure(written), structure(other)) == ''


def test_refusal_is_one_line():
    with pytest.raises(BadInput, match='mnist') as error:
        tflite_int8_writer.timing_tflite_int8(genotypes.DARTS_V2, **{**CIFAR.network_kwargs(), 'setting': 'mnist'})
    assert '\n' not in str(error.value)
