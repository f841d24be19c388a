"""The shipped int8 predictor: found by name, int8, and its recorded held-out figures re-made here from
its own table (the issue's bar: load-normalised Kendall tau >= 0.75, >= 90% within 10%)."""
import json
import os

import numpy as np
import pytest
from scipy import stats

from ladnas_tf.lpm import dataset, registry
from ladnas_tf.profiling.targets.base import numeric_format


@pytest.fixture(scope='module')
def shipped():
    return registry.load('cpu_tflite_int8_cifar')


def test_it_is_found_by_name_and_predicts_int8_latency(shipped):
    assert numeric_format(shipped.target_description) == 'int8'
    assert shipped.recipe.architecture == 'gnn' and shipped.cells == 'both'


def test_its_held_out_ranking_is_re_made_from_its_table(shipped, repo_root):
    meta, metrics = shipped.metadata, json.load(open(os.path.join(shipped.path, 'metrics.json')))
    df = dataset.load_tables([os.path.join(repo_root, t) for t in meta['data']['tables']])
    fit, _, test = dataset.split_rows(df, metrics['split_seed'], metrics['test_fraction'])
    truth = dataset.normalised_latency(test, dataset.reference_median(fit))
    predicted = shipped.predict_ms(dataset.encodings(test, shipped.cells))
    tau = stats.kendalltau(truth, predicted)[0]
    within = np.mean(np.abs(predicted / truth - 1) <= 0.10)
    assert len(test) == metrics['test_size'] and tau == pytest.approx(metrics['vs_normalised']['kendall_tau'], abs=1e-6)
    assert tau >= 0.75 and within >= 0.90
