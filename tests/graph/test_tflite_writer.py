"""graph.tflite_writer writes the converter's file: same operators, options, tensor shapes and types,
metadata and outputs, on published and random genotypes at a tiny scale of both settings (the full
comparison: benchmarks/tflite_writer_equivalence.py, docs/tflite_writer_equivalence.md)."""
import numpy as np
import pytest

from benchmarks.tflite_writer_equivalence import compare, run
from ladnas_tf import genotypes, search_space
from ladnas_tf.bad_input import BadInput
from ladnas_tf.graph import tflite_writer
from ladnas_tf.graph.setting import Setting

# ImageNet at 224 px keeps the real map sizes 28, 14 and 7 (odd: dilated convs pad unevenly there).
CIFAR = Setting('cifar', 8, 3, 16, 1, 10)
IMAGENET = Setting('imagenet', 4, 5, 224, 1, 10)
RANDOM = [search_space.sample_genotype(np.random.default_rng(seed)) for seed in range(6)]


def assert_equivalent(genotype, setting):
    difference, relative = compare(genotype, setting)
    assert difference == ''
    assert relative < 1e-5


@pytest.mark.parametrize('name', sorted(genotypes.NAMED))
@pytest.mark.parametrize('setting', [CIFAR, IMAGENET], ids=['cifar', 'imagenet'])
def test_published_genotypes(name, setting):
    assert_equivalent(genotypes.NAMED[name], setting)


@pytest.mark.parametrize('index', range(len(RANDOM)))
@pytest.mark.parametrize('setting', [CIFAR, IMAGENET], ids=['cifar', 'imagenet'])
def test_random_genotypes(index, setting):
    assert_equivalent(RANDOM[index], setting)


def test_shared_space_to_batch_and_batch():
    """Two equal dilated convs on one input at stride 2 keep one SPACE_TO_BATCH_ND; a batch of 2."""
    cell = [('dil_conv_3x3', 0), ('dil_conv_3x3', 1)] * 4
    genotype = search_space.make_genotype(normal=cell, reduce=cell)
    assert_equivalent(genotype, Setting('cifar', 8, 3, 16, 2, 10))


def test_given_weights_are_used():
    """Weights passed in (the walk's order, TF layout) make the file: the seeded ones give the default
    file byte for byte, all-zero ones zero logits."""
    shapes = []
    graph = tflite_writer._TFGraph(lambda shape: shapes.append(shape) or np.zeros(shape, np.float32))
    graph.network(graph.input(1, 16), genotypes.DARTS_V2, 'cifar', 8, 3, 10, 16)
    rng = np.random.default_rng(0)
    seeded = [rng.normal(0, 0.1, shape).astype(np.float32) for shape in shapes]
    kwargs = CIFAR.network_kwargs()
    assert tflite_writer.write_tflite(genotypes.DARTS_V2, **kwargs, weights=seeded) == \
        tflite_writer.write_tflite(genotypes.DARTS_V2, **kwargs)
    zeros = tflite_writer.write_tflite(genotypes.DARTS_V2, **kwargs, weights=[np.zeros(s) for s in shapes])
    assert not run(zeros, np.ones((1, 16, 16, 3), np.float32)).any()


@pytest.mark.parametrize('kwargs, words', [
    (dict(setting='mnist'), 'mnist'),
    (dict(setting='imagenet', image_size=112, num_cells=3), 'odd map size'),
])
def test_refusals_are_one_line(kwargs, words):
    cell = [('skip_connect', 0), ('skip_connect', 1)] * 4
    genotype = search_space.make_genotype(normal=cell, reduce=cell)
    with pytest.raises(BadInput, match=words) as error:
        tflite_writer.write_tflite(genotype, **{**CIFAR.network_kwargs(), **kwargs})
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('setting', [CIFAR, IMAGENET], ids=['cifar', 'imagenet'])
def test_timing_files_differ_from_the_converters_only_in_weight_values(setting):
    """timing_tflite, the profiler's file: fresh weights drawn at once, structure and params as the
    converter's (see tests/profiling/test_profiler.py for the profiler using it); finite outputs."""
    from benchmarks.tflite_writer_equivalence import first_difference, structure
    from ladnas_tf.graph import constant
    kwargs = setting.network_kwargs()
    fast, params, macs = tflite_writer.timing_tflite(RANDOM[0], **kwargs)
    converted, *counts = constant.genotype_to_tflite(RANDOM[0], **kwargs)
    assert first_difference(structure(converted), structure(fast)) == ''
    assert [params, macs] == counts
    assert fast != tflite_writer.timing_tflite(RANDOM[0], **kwargs, seed=1)[0]
    shape = (setting.batch_size, setting.image_size, setting.image_size, 3)
    assert np.isfinite(run(fast, np.ones(shape, np.float32))).all()
