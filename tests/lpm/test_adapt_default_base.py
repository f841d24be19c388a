"""A new device adapts from the shipped base of its own numeric format unless told otherwise."""
import json
import os

import numpy as np
import pytest

from ladnas_tf import search_space
from ladnas_tf.lpm import adapt

SETTING = 'cifar-C36-N20-32px-b1-k10'  # the shipped predictors' setting


@pytest.mark.parametrize('target, base', [('cpu_tflite_int8', 'cpu_tflite_int8_cifar'),
                                          ('cpu_tflite', 'cpu_tflite_cifar')])
def test_the_default_base_is_the_shipped_one_of_the_tables_format(target, base, latency_table, tmp_path):
    rng = np.random.default_rng(0)
    rows = [latency_table.row(search_space.sample_genotype(rng), 20 + i, target, SETTING, ref_ms=25.0)
            for i in range(8)]
    table = latency_table.write(str(tmp_path / 't.csv'), rows, {'target': target, 'setting': SETTING})
    adapt.adapt_and_save(None, [table], [str(tmp_path / 'out')], method='scale')
    with open(os.path.join(tmp_path, 'out', 'metadata.json')) as f:
        assert json.load(f)['adapted_from']['name'] == base
