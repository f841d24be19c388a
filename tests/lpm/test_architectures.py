"""The LPM's regressors besides the paper's MLP: the positional kernel costs, least squares on the bits
and the cell graph network; each trained on a table, saved, loaded and differentiated like the MLP."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from ladnas_tf import genotypes, search_space
from ladnas_tf.lpm import dataset, model as lpm

LINEAR = lpm.LPMRecipe(architecture='positional', cells='both', label='normalised', target_scaling='log',
                       weight_decay=1e-9)


def _counts(genotype):
    """(cell, source, op) counts of a genotype, computed from its (op, input) pairs, not from bits."""
    counts = np.zeros((2, 3, search_space.NUM_OPS))
    for c, cell in enumerate((genotype.normal, genotype.reduce)):
        for op, i in cell:
            counts[c, min(i, 2), search_space.PRIMITIVES.index(op)] += 1
    return counts.reshape(-1)


def test_the_positional_matrix_counts_operations_by_cell_and_input_source():
    rng = np.random.default_rng(0)
    for genotype in [genotypes.DARTS_V2] + [search_space.sample_genotype(rng) for _ in range(20)]:
        bits = dataset.genotype_encoding(genotype, 'both')
        np.testing.assert_array_equal(bits @ lpm.positional_matrix('both'), _counts(genotype))


def _table(latency_table, tmp_path, rows, log_cost, seed=0):
    """A table whose latencies follow known multiplicative costs per (cell, source, op), each row timed
    under its own load (ref_ms) that slows it alike: the load-normalised label is the law itself."""
    rng = np.random.default_rng(seed)
    made = []
    for _ in range(rows):
        genotype = search_space.sample_genotype(rng)
        ref_ms = 20 * rng.uniform(0.9, 1.3)
        made.append(latency_table.row(genotype, 20 * np.exp(_counts(genotype) @ log_cost) * ref_ms / 20,
                                      'cpu_tflite_int8', 'cifar', ref_ms=ref_ms))
    return dataset.load_tables([latency_table.write(str(tmp_path / 't.csv'), made)])


def test_a_positional_lpm_recovers_exact_per_operation_costs(latency_table, tmp_path):
    log_cost = np.random.default_rng(1).normal(0, 0.05, 48)
    df = _table(latency_table, tmp_path, 300, log_cost)
    model = lpm.LPM(LINEAR)
    model.train(df, progress=False)
    rng = np.random.default_rng(7)
    unseen = [search_space.sample_genotype(rng) for _ in range(50)]
    # At the table's median load (what a normalised LPM predicts), 20 ms scaled by the law.
    expected = 20 * np.exp(np.array([_counts(g) for g in unseen]) @ log_cost) * np.median(df['ref_ms']) / 20
    np.testing.assert_allclose(model.predict_genotypes(unseen), expected, rtol=1e-3)


@pytest.mark.parametrize('architecture', ['linear', 'positional', 'gnn'])
def test_each_architecture_trains_saves_loads_and_differentiates(architecture, latency_table, tmp_path):
    df = _table(latency_table, tmp_path, 60, np.random.default_rng(2).normal(0, 0.05, 48))
    recipe = dataclasses.replace(LINEAR, architecture=architecture, epochs=3, patience=0, val_fraction=0.0,
                                 optimizer='adam', lr=1e-3)
    model = lpm.LPM(recipe)
    model.train(df, progress=False)
    model.save(str(tmp_path / 'lpm'))
    loaded = lpm.LPM.load(str(tmp_path / 'lpm'))
    x = dataset.encodings(df, 'both')[:8]
    np.testing.assert_allclose(loaded.predict_ms(x), model.predict_ms(x), rtol=1e-6)
    relaxed = tf.Variable(np.full((2, 224), 1 / 8, np.float32))
    with tf.GradientTape() as tape:
        y = loaded(relaxed)
    assert np.all(np.isfinite(tape.gradient(y, relaxed).numpy())) and loaded.recipe.architecture == architecture


def test_an_ensemble_is_for_the_mlp_only():
    with pytest.raises(lpm.LPMError, match='ensemble is for the mlp only'):
        lpm.LPMRecipe(architecture='gnn', ensemble=3)
