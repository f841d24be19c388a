"""The architecture objective with a normal-cell or a both-cell LPM, and the FLOPs term beside it.

The LPMs here are untrained regressors saved with hand-written metadata (log target scaling around
15 ms, so predictions are positive): what is tested is which bits reach them, not how well they predict."""
import numpy as np
import pytest
import tensorflow as tf

from ladnas_tf import genotypes, objective, search, search_space
from ladnas_tf.cost import errors, flops
from ladnas_tf.graph.setting import Setting
from ladnas_tf.lpm import dataset, model as lpm_lib, registry


@pytest.fixture(scope='module')
def both_lpm(predictors):
    return predictors.make(cells='both')


@pytest.fixture(scope='module')
def both_lpm_dir(predictors, tmp_path_factory):
    """The same predictor on disk, for what takes a name or a directory (a search's settings)."""
    return predictors.save(tmp_path_factory.mktemp('lpm') / 'both', cells='both')


class _Model:
    def __init__(self):
        rng = np.random.default_rng(0)
        self.alpha_normal = tf.Variable(1e-3 * rng.normal(size=(14, 8)), dtype=tf.float32)
        self.alpha_reduce = tf.Variable(1e-3 * rng.normal(size=(14, 8)), dtype=tf.float32)


def test_a_both_cell_lpm_drives_lat_alpha_through_both_alphas(both_lpm):
    goal = objective.Objective(lambda_=0.1, predictor=both_lpm)
    assert goal.latency.cells == 'both' and list(goal.arch_loss.terms) == ['latency']
    darts_v2 = np.concatenate([search_space.encode_cell(genotypes.DARTS_V2.normal),
                               search_space.encode_cell(genotypes.DARTS_V2.reduce)])
    assert goal.reference_ms == pytest.approx(float(goal.lpm.predict_ms(darts_v2)[0])) and goal.reference_ms > 0
    model = _Model()
    with tf.GradientTape() as tape:
        value = goal.arch_loss.terms['latency'](model)
    g_n, g_r = tape.gradient(value, [model.alpha_normal, model.alpha_reduce])
    assert float(value) == pytest.approx(0.1 * goal.scalars()['arch/lat_alpha_ms'] / goal.reference_ms, rel=1e-5)
    assert np.abs(g_n.numpy()).max() > 0 and np.abs(g_r.numpy()).max() > 0


def test_report_predicts_the_genotype_with_both_cells(both_lpm):
    goal = objective.Objective(lambda_=0.1, predictor=both_lpm)
    g = genotypes.DARTS_V2
    report = goal.report(g)
    both_bits = dataset.genotype_encoding(g, 'both')
    assert report['predicted_ms'] == pytest.approx(float(goal.lpm.predict_ms(both_bits)[0]))
    assert report['unit_ms'] == goal.reference_ms and report['target'] == 'cpu_tflite'
    other_reduce = g._replace(reduce=genotypes.PDARTS.reduce)
    assert goal.report(other_reduce)['predicted_ms'] != pytest.approx(report['predicted_ms'])


def test_a_normal_cell_lpm_still_reads_the_normal_cell_only(predictors):
    goal = objective.Objective(lambda_=0.1, predictor=predictors.make(cells='normal'))
    assert goal.latency.cells == 'normal'
    g = genotypes.DARTS_V2
    assert goal.reference_ms == pytest.approx(float(goal.lpm.predict_ms(search_space.encode_cell(g.normal))[0]))
    assert goal.predicted_ms(g._replace(reduce=genotypes.PDARTS.reduce)) == goal.predicted_ms(g)


def test_an_lpm_of_cells_lat_cannot_sample_is_refused(tmp_path, monkeypatch, predictors):
    monkeypatch.setitem(lpm_lib.CELLS, 'reduce', ('reduce',))  # an LPM kind lpm/model.py might grow
    lpm_dir = predictors.save(tmp_path / 'reduce', cells='reduce')  # named in the refusal by its directory
    with pytest.raises(objective.ObjectiveError, match="samples normal or both cells") as error:
        objective.Objective(lambda_=0.1, predictor=registry.load(lpm_dir))
    assert lpm_dir in str(error.value) and "'reduce'" in str(error.value) and '\n' not in str(error.value)


def test_the_flops_term_is_untouched():
    tiny = Setting('cifar', 4, 3, 8, 1, 10)  # MACs tables of a tiny network: quick to count
    goal = objective.Objective(eta=1e-3, eval_setting=tiny)
    assert goal.latency is None and goal.lpm is None and list(goal.arch_loss.terms) == ['flops']
    tables = flops.macs_table(tiny.channels, tiny.image_size, tiny.num_cells)
    model = _Model()
    expected = 1e-3 * flops.flops(model.alpha_normal, model.alpha_reduce, tables) / flops.genotype_macs(
        objective.REFERENCE, tables)
    assert float(goal.arch_loss.terms['flops'](model)) == pytest.approx(float(expected))


# ---- latency error models: the search reads the perturbed predictor, the report the true one ----

def test_a_systematic_error_steers_the_search_but_not_the_report(both_lpm):
    exact = objective.Objective(lambda_=0.1, predictor=both_lpm)
    goal = objective.Objective(lambda_=0.1, predictor=both_lpm, error=errors.Spec('systematic', 0.1))
    g = genotypes.PDARTS
    report = goal.report(g)
    assert report['predicted_ms'] == pytest.approx(exact.predicted_ms(g))  # the true LPM's
    err = report['latency_error']
    assert err['searched_predicted_ms'] == pytest.approx(goal.searched_ms(g)) != pytest.approx(report['predicted_ms'])
    assert goal.latency.scale_ms == pytest.approx(goal.searched_ms(objective.REFERENCE))
    assert abs(err['mre'] - 0.1) < 0.02 and -1 <= err['kendall_tau'] <= 1 and err['archs'] > 0


def test_a_worse_predictor_replaces_the_lpm_in_the_search(both_lpm, predictors):
    worse = predictors.make(cells='both', seed=7)
    goal = objective.Objective(lambda_=0.1, predictor=both_lpm, error=errors.Spec('predictor', 0.0, 'worse'),
                               worse_predictor=worse)
    code = dataset.genotype_encoding(genotypes.DARTS_V2, 'both')
    assert goal.searched_ms(genotypes.DARTS_V2) == pytest.approx(float(worse.predict_ms(code)[0]))
    assert goal.predicted_ms(genotypes.DARTS_V2) == pytest.approx(float(goal.lpm.predict_ms(code)[0]))
    normal_only = predictors.make(cells='normal')
    with pytest.raises(objective.ObjectiveError, match="reads 'normal' cells") as error:
        objective.Objective(lambda_=0.1, predictor=both_lpm, error=errors.Spec('predictor', 0.0, 'normal'),
                            worse_predictor=normal_only)
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('size', [float('nan'), float('inf'), -0.2])
def test_a_bad_error_size_is_refused_before_anything_is_written(both_lpm_dir, tmp_path, size):
    config = search.SearchConfig(lambda_=0.1, lpm_dir=both_lpm_dir, latency_error='systematic',
                                 latency_error_size=size)
    with pytest.raises(search.SearchError, match='finite number >= 0') as error:
        search.search(config, str(tmp_path / 'run'))
    assert '\n' not in str(error.value) and not (tmp_path / 'run').exists()


def test_an_error_model_without_a_latency_term_is_refused():
    with pytest.raises(objective.ObjectiveError, match='perturbs an LPM'):
        objective.check(0.0, 0.1, None, None, 20, errors.Spec('multiplicative', 0.2))


# ---- a prediction beside a measurement: each a multiple of DARTS_V2 on its own device ----

def test_the_report_sets_the_prediction_beside_darts_v2_on_the_predictors_device(predictors):
    goal = objective.Objective(lambda_=0.1, predictor=predictors.make(cells='both', device='Board X'))
    report = goal.report(genotypes.PDARTS)
    assert report['predicted_vs_reference'] == pytest.approx(
        goal.predicted_ms(genotypes.PDARTS) / goal.predicted_ms(genotypes.DARTS_V2))
    assert report['predicted_on'] == 'Board X [cpu_tflite, float32, 1 thread]'


def test_comparison_text_gives_milliseconds_only_with_their_device():
    # The case: a machine 2.4x faster than the predictor's; relative to DARTS_V2 the two agree.
    report = {'predicted_ms': 13.43, 'unit_ms': 18.92, 'predicted_on': 'Predictor CPU [cpu_tflite, float32, 1 thread]',
              'measured_ms': 5.49, 'reference_ms': 7.52, 'measured_on': 'This CPU [cpu_tflite, float32, 1 thread]'}
    text = objective.comparison_text(report)
    assert text == ('predicted 0.71x DARTS_V2 on Predictor CPU [cpu_tflite, float32, 1 thread] (13.43 vs 18.92 ms '
                    'there); measured 0.73x DARTS_V2 on This CPU [cpu_tflite, float32, 1 thread] (5.49 vs 7.52 ms '
                    'there)')
    only_predicted = {k: v for k, v in report.items() if not k.startswith(('measured', 'reference'))}
    assert objective.comparison_text(only_predicted).startswith('predicted 0.71x') and 'measured' not in \
        objective.comparison_text(only_predicted)
    assert objective.comparison_text({}) == '' and objective.comparison_text({'eta': 0.1}) == ''


def test_a_device_is_named_with_its_numeric_format():
    assert objective.device_name({'target': 'cpu_tflite_int8', 'threads': 2}) == \
        'an unrecorded device [cpu_tflite_int8, int8, 2 threads]'
    assert objective.device_name({'target': 'ssh', 'device': 'Cortex-A72, 4 cores, aarch64', 'threads': 1,
                                  'numeric_format': 'int8'}) == 'Cortex-A72, 4 cores, aarch64 [ssh, int8, 1 thread]'


def test_measured_report_is_the_ratio_to_darts_v2_timed_alongside():
    measured = {'latency_ms': 6.0, 'cv': 0.01, 'ref_ms': 8.0, 'attempts': 1, 'params': 10, 'macs': 20}
    out = objective.measured_report(measured, {'target': 'cpu_tflite', 'device': 'Here', 'threads': 1})
    assert out['measured_vs_reference'] == 0.75 and out['reference_ms'] == 8.0 and out['measured_ms'] == 6.0
    assert out['measured_on'] == 'Here [cpu_tflite, float32, 1 thread]'
    assert (out['params'], out['macs'], out['measured_cv']) == (10, 20, 0.01)


def test_without_a_predictor_the_network_is_timed_on_the_evaluation_target():
    goal = objective.Objective(eta=1e-3, eval_setting=Setting('cifar', 4, 3, 8, 1, 10),
                               eval_target={'target': 'cpu_tflite_int8'})
    assert goal.target_description() == {'target': 'cpu_tflite_int8'}
    assert goal.report(genotypes.DARTS_V2)['target'] == 'cpu_tflite_int8'
    assert objective.Objective().target_description() == {'target': 'cpu_tflite'}
