"""The latency prediction module: tables, split, architecture, fit, persistence, refusals, gradient, CLI."""
import dataclasses
import json
import os
import shutil

import keras
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
import tensorflow as tf

from ladnas_tf import search_space
from ladnas_tf.lpm import dataset, metrics, model as lpm
from ladnas_tf.profiling import table as table_lib

TARGET = {'target': 'cpu_tflite', 'setting': 'cifar-C4-N3-8px-b1-t1', 'device': 'test', 'threads': 1}
# A synthetic latency law: per-op costs growing with depth, extra cost for convolutions on
# intermediate nodes and for two separable convs on one node, a little from the reduction cell, 1% noise.
OP_COST = {'max_pool_3x3': 0.6, 'avg_pool_3x3': 0.7, 'skip_connect': 0.1, 'sep_conv_3x3': 2.0,
           'sep_conv_5x5': 2.8, 'dil_conv_3x3': 1.3, 'dil_conv_5x5': 1.8}
FAST = lpm.LPMRecipe(optimizer='adam', lr=3e-3, target_scaling='standard', batch_size=100, epochs=60)


def synthetic_latency(genotype):
    ms = 8.0
    for k, (op, i) in enumerate(genotype.normal):
        ms += OP_COST[op] * (1 + 0.05 * (k // 2)) + (0.2 if i >= 2 and op[:3] in ('sep', 'dil') else 0)
    for n in range(0, 8, 2):
        ms += 0.5 * (genotype.normal[n][0].startswith('sep') and genotype.normal[n + 1][0].startswith('sep'))
    return ms + 0.05 * sum(OP_COST[op] for op, _ in genotype.reduce)


def bits(cell):
    return ''.join(str(int(b)) for b in search_space.encode_cell(cell))


REF_MS = 18.0  # the reference network's time on a quiet machine


def synthetic_rows(latency_table, n, seed=0, target=TARGET, loaded=0.0):
    """Rows of the synthetic law; a `loaded` share of them timed while the machine was busy: latency
    and ref_ms (the reference timed around the row) both slowed by the same factor, 1.3-2.5x."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        g = search_space.sample_genotype(rng)
        load = float(rng.uniform(1.3, 2.5)) if rng.random() < loaded else 1.0
        ms = synthetic_latency(g) * float(np.exp(rng.normal(0, 0.01))) * load
        rows.append(latency_table.row(g, ms, target['target'], target['setting'],
                                      ref_ms=REF_MS * load * float(np.exp(rng.normal(0, 0.005))), clean_ms=ms / load))
    return pd.DataFrame(rows).drop_duplicates('arch_id')


def write_table(latency_table, path, df, target=TARGET):
    return latency_table.write(path, df, target)


@pytest.fixture(scope='module')
def table(latency_table, tmp_path_factory):
    return write_table(latency_table, tmp_path_factory.mktemp('tables') / 'synth.csv',
                       synthetic_rows(latency_table, 1500))


@pytest.fixture(scope='module')
def data(table):
    df = dataset.load_tables([table])
    return (df, *dataset.split(df, seed=0))


@pytest.fixture(scope='module')
def trained(data):
    _, train, _ = data
    model = lpm.LPM(FAST)
    model.train(train, progress=False)
    return model


@pytest.fixture(scope='module')
def saved(trained, tmp_path_factory):
    path = str(tmp_path_factory.mktemp('lpm') / 'model')
    trained.save(path)
    return path


# ---- architecture ----

def _dense(model):
    return [l for l in model.layers if isinstance(l, keras.layers.Dense)]


def test_paper_architecture():
    model = lpm.LPM().regressor
    assert model.input_shape == (None, 112)
    dense = _dense(model)
    assert [l.units for l in dense] == [256, 64, 1]
    assert [l.activation.__name__ for l in dense] == ['sigmoid', 'sigmoid', 'linear']
    assert model.output_shape == (None, 1)


def test_both_cells_ensemble_architecture():
    model = lpm.LPM(lpm.LPMRecipe(cells='both', ensemble=3))
    assert model.input_size == 224 and model.regressor.input_shape == (None, 224)
    assert model.regressor.output_shape == (None, 3)
    for k in range(3):
        member = [model.regressor.get_layer(f'm{k}_{n}') for n in ('hidden1', 'hidden2', 'out')]
        assert [l.units for l in member] == [256, 64, 1]
    assert model.predict_ms(np.zeros((2, 224))).shape == (2,)


@pytest.mark.parametrize('bad', [dict(optimizer='rmsprop'), dict(cells='reduce'), dict(epochs=0),
                                 dict(patience=5), dict(lr=0), dict(target_scaling='minmax')])
def test_recipe_refuses_bad_values(bad):
    with pytest.raises(lpm.LPMError):
        lpm.LPMRecipe(**bad)


# ---- tables ----

def test_load_tables_reads_encodings_as_bits(data):
    df, _, _ = data
    assert len(df) == 1500 and df.attrs['target_description'] == TARGET
    row = df.iloc[7]
    x = dataset.encodings(df.iloc[[7]], 'both')
    assert x.shape == (1, 224) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, :112], search_space.encode_cell(json.loads(row['normal'])))
    np.testing.assert_array_equal(x[0, 112:], search_space.encode_cell(json.loads(row['reduce'])))


def _broken(latency_table, tmp_path, edit, name='bad.csv', target=TARGET):
    df = synthetic_rows(latency_table, 8, seed=3)
    edit(df)
    return write_table(latency_table, tmp_path / name, df, target)


@pytest.mark.parametrize('edit, words', [
    (lambda d: d.__setitem__('latency_ms', d['latency_ms'].where(d.index != 3)), ['latency_ms', 'row 3']),
    (lambda d: d.loc.__setitem__((5, 'latency_ms'), -1.0), ['latency_ms', 'row 5']),
    (lambda d: d.loc.__setitem__((2, 'latency_ms'), 0.0), ['non-positive', 'row 2']),
    (lambda d: d.drop(columns=['latency_ms', 'target'], inplace=True),
     ['missing column', 'latency_ms, target']),
    (lambda d: d.loc.__setitem__((4, 'normal_encoding'), d.loc[4, 'normal_encoding'][:-1]),
     ['normal_encoding', 'row 4', '112']),
    (lambda d: d.loc.__setitem__((1, 'reduce_encoding'), '1' + d.loc[1, 'reduce_encoding'][1:]),
     ['reduce_encoding', 'row 1']),
    (lambda d: d.loc.__setitem__((6, 'target'), 'gpu'), ['mixed target']),
    (lambda d: d.loc.__setitem__((6, 'arch_id'), d.loc[0, 'arch_id']),
     ['arch_id', 'different latencies', '0, 6']),
])
def test_load_tables_refuses_bad_tables(latency_table, tmp_path, edit, words):
    path = _broken(latency_table, tmp_path, edit)
    with pytest.raises(table_lib.TableError) as e:
        dataset.load_tables([path])
    message = str(e.value)
    assert '\n' not in message and all(w in message for w in words), message


def test_malformed_encoding_reasons():
    good = bits(search_space.sample_cell(np.random.default_rng(0)))
    nine = '1' + good[1:] if good[0] == '0' else good
    two_ops = list(good)
    first = good.index('1')
    two_ops[first + 1 if first % 8 < 7 else first - 1] = '1'
    two_ops[good.rindex('1')] = '0'
    assert table_lib.encoding_errors([good, good[:-1], good.replace('1', '2', 1), nine, ''.join(two_ops)]) == [
        '', 'not 112 0/1 characters', 'not 112 0/1 characters', '9 ones instead of 8', 'two ops on one edge']


def test_load_tables_refuses_mixed_targets_across_tables(latency_table, tmp_path):
    a = write_table(latency_table, tmp_path / 'a.csv', synthetic_rows(latency_table, 5, seed=1))
    other = {**TARGET, 'target': 'gpu'}
    b = write_table(latency_table, tmp_path / 'b.csv', synthetic_rows(latency_table, 5, seed=2, target=other), other)
    with pytest.raises(table_lib.TableError, match="mixed target values across tables: 'cpu_tflite'.*'gpu'"):
        dataset.load_tables([a, b])
    c = write_table(latency_table, tmp_path / 'c.csv', synthetic_rows(latency_table, 5, seed=2),
                    {**TARGET, 'threads': 4})
    with pytest.raises(table_lib.TableError, match='mixed threads values across tables'):
        dataset.load_tables([a, c])


def test_load_tables_merges_tables_and_exact_duplicates(latency_table, tmp_path):
    rows = synthetic_rows(latency_table, 10, seed=4)
    a = write_table(latency_table, tmp_path / 'a.csv', rows.iloc[:6])
    b = write_table(latency_table, tmp_path / 'b.csv', rows.iloc[4:])  # rows 4, 5 in both, same latency
    df = dataset.load_tables([a, b])
    assert sorted(df['arch_id']) == sorted(rows['arch_id'])


# ---- split ----

def test_split_is_deterministic_and_stable_when_rows_are_added(latency_table, tmp_path, data):
    df, train, test = data
    again = dataset.load_tables([write_table(latency_table, tmp_path / 't.csv', df)])
    again_train, again_test = dataset.split(again, seed=0)
    assert set(again_test['arch_id']) == set(test['arch_id'])
    assert 0.15 < len(test) / len(df) < 0.25
    grown = pd.concat([synthetic_rows(latency_table, 400, seed=99), df]).sample(frac=1, random_state=1)
    grown_train, grown_test = dataset.split(grown, seed=0)
    assert set(test['arch_id']) <= set(grown_test['arch_id'])
    assert set(train['arch_id']) <= set(grown_train['arch_id'])
    assert set(dataset.split(df, seed=1)[1]['arch_id']) != set(test['arch_id'])


def test_first_rows_are_nested(data):
    _, train, _ = data
    small, large = dataset.first_rows(train, 100), dataset.first_rows(train, 300)
    assert len(small) == 100 and set(small['arch_id']) < set(large['arch_id'])
    assert dataset.first_rows(train, 0) is train


# ---- fit, prediction, gradient ----

def test_fits_synthetic_latency_law(trained, data):
    _, _, test = data
    m = metrics.regression_metrics(test['latency_ms'], trained.predict_ms(dataset.encodings(test)))
    assert m['mre_pct'] < 5 and m['kendall_tau'] > 0.8, m
    assert trained.metadata['data']['train_rows'] == 1500 - len(test)


def test_paper_recipe_learns_raw_milliseconds(data):
    _, train, test = data
    model = lpm.LPM(lpm.LPMRecipe(epochs=15))
    history = model.train(train, progress=False)
    loss = history.history['loss']
    assert model.scaling['kind'] == 'none' and loss[-1] < 0.2 * loss[0]
    predicted = model.predict_ms(dataset.encodings(test))
    assert metrics.regression_metrics(test['latency_ms'], predicted)['mre_pct'] < 25


def test_early_stopping_restores_and_stops(data):
    _, train, _ = data
    fit, val = dataset.holdout(train, fraction=0.2)
    model = lpm.LPM(lpm.LPMRecipe(optimizer='adam', lr=0.05, target_scaling='log', patience=2, val_fraction=0.2,
                               epochs=200, batch_size=200))
    history = model.train(fit, val, progress=False)
    assert len(history.history['val_loss']) < 200 and model.metadata['data']['val_rows'] == len(val)


def test_gradient_wrt_relaxed_encoding(trained):
    rng = np.random.default_rng(0)
    relaxed = tf.Variable(rng.dirichlet(np.ones(8), size=(4, 14)).reshape(4, 112).astype(np.float32))
    with tf.GradientTape() as tape:
        ms = trained(relaxed)
        total = tf.reduce_sum(ms)
    grad = tape.gradient(total, relaxed).numpy()
    assert ms.shape == (4,) and grad.shape == (4, 112)
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0

    @tf.function  # the search calls the LPM inside its compiled train step
    def graph_grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(trained(x))
        return tape.gradient(total, x)
    np.testing.assert_allclose(graph_grad(tf.identity(relaxed)).numpy(), grad, rtol=1e-4, atol=1e-6)
    # Sep-conv bits cost more than skip bits in the law: the gradient must say so on average.
    grad = grad.reshape(4, 14, 8)
    sep5, skip = search_space.PRIMITIVES.index('sep_conv_5x5'), search_space.PRIMITIVES.index('skip_connect')
    assert grad[:, :, sep5].mean() > grad[:, :, skip].mean()


def test_predict_refuses_wrong_width(trained):
    with pytest.raises(lpm.LPMError, match=r'\[n, 112\]'):
        trained.predict_ms(np.zeros((3, 224)))


# ---- persistence and refusals ----

def test_save_load_round_trip(trained, saved, data):
    _, _, test = data
    loaded = lpm.LPM.load(saved, target=TARGET['target'])
    x = dataset.encodings(test)
    np.testing.assert_allclose(loaded.predict_ms(x), trained.predict_ms(x), rtol=1e-6)
    meta = json.load(open(os.path.join(saved, 'metadata.json')))
    assert meta == loaded.metadata and meta['target_description'] == TARGET
    assert meta['signature'] == search_space.signature() and meta['cells'] == 'normal'
    assert meta['input_size'] == 112 and meta['scaling']['kind'] == 'standard'
    assert meta['recipe']['optimizer'] == 'adam' and len(meta['data']['sha256']) == 64
    assert loaded.recipe == FAST
    assert not loaded.regressor.trainable_weights and not loaded.regressor.losses  # frozen for the search


def _edited(saved, tmp_path, edit):
    path = str(tmp_path / edit.__name__)
    shutil.copytree(saved, path)
    meta_file = os.path.join(path, 'metadata.json')
    meta = json.load(open(meta_file))
    edit(meta)
    json.dump(meta, open(meta_file, 'w'))
    return path


def test_load_refuses_another_search_space(saved, tmp_path):
    def other_ops(meta):
        meta['signature']['primitives'][-1] = 'conv_7x1_1x7'
    with pytest.raises(lpm.LPMMismatchError, match='another search space.*primitives'):
        lpm.LPM.load(_edited(saved, tmp_path, other_ops))
    other = {**search_space.signature(), 'edges': [[0, 1]]}
    with pytest.raises(lpm.LPMMismatchError, match='edges differ'):
        lpm.LPM.load(saved, expected_signature=other)


def test_load_refuses_another_input_size(saved, tmp_path):
    def wider(meta):
        meta['input_size'] = 224
    with pytest.raises(lpm.LPMMismatchError, match='input size 224'):
        lpm.LPM.load(_edited(saved, tmp_path, wider))

    def both_cells(meta):  # metadata claims 224 bits but the model takes 112
        meta['input_size'], meta['cells'], meta['recipe']['cells'] = 224, 'both', 'both'
    with pytest.raises(lpm.LPMMismatchError, match='model input size 112'):
        lpm.LPM.load(_edited(saved, tmp_path, both_cells))


def test_load_refuses_another_target(saved):
    with pytest.raises(lpm.LPMMismatchError, match="trained for target 'cpu_tflite', not 'gpu'"):
        lpm.LPM.load(saved, target='gpu')
    with pytest.raises(lpm.LPMMismatchError, match='setting'):
        lpm.LPM.load(saved, target={**TARGET, 'setting': 'imagenet-C48-N14-224px-b1-t1'})
    with pytest.raises(lpm.LPMMismatchError, match='threads'):
        lpm.LPM.load(saved, target={**TARGET, 'threads': 4})
    assert lpm.LPM.load(saved, target=TARGET, setting=TARGET['setting']).metadata['target'] == 'cpu_tflite'


def test_load_refuses_non_lpm_directory(tmp_path):
    with pytest.raises(lpm.LPMError, match='not an LPM directory'):
        lpm.LPM.load(str(tmp_path))


# ---- load-normalised label ----

@pytest.fixture(scope='module')
def loaded_data(latency_table, tmp_path_factory):
    """A table with a quarter of its rows timed under load, split as the CLI splits it."""
    path = write_table(latency_table, tmp_path_factory.mktemp('tables') / 'loaded.csv',
                       synthetic_rows(latency_table, 1200, seed=5, loaded=0.25))
    df = dataset.load_tables([path])
    return (path, *dataset.split(df, seed=0))


@pytest.fixture(scope='module')
def normalised(loaded_data):
    _, train, _ = loaded_data
    model = lpm.LPM(dataclasses.replace(FAST, label='normalised'))
    model.train(train, progress=False)
    return model


def _mre_vs_clean(model, test):
    """MRE against the quiet-machine latency, expressed at the training rows' median reference load."""
    typical = test['clean_ms'].to_numpy() * model.label.get('ref_median_ms', REF_MS) / REF_MS
    return metrics.regression_metrics(typical, model.predict_ms(dataset.encodings(test)))['mre_pct']


def test_normalised_label_takes_the_load_out(normalised, loaded_data):
    _, train, test = loaded_data
    assert normalised.label == {'kind': 'normalised', 'ref_median_ms': float(np.median(train['ref_ms'])),
                                'reference': None}
    np.testing.assert_allclose(normalised.label_ms(test),
                               test['latency_ms'] / test['ref_ms'] * np.median(train['ref_ms']))
    raw = lpm.LPM(FAST)  # the same recipe on the measured labels, loaded rows and all
    raw.train(train, progress=False)
    # Predictions are in ms at the typical load (close to the quiet reference time, as most rows are quiet).
    assert abs(normalised.label['ref_median_ms'] / REF_MS - 1) < 0.01
    assert _mre_vs_clean(normalised, test) < 5 < _mre_vs_clean(raw, test)


def test_normalised_label_round_trip(normalised, loaded_data, tmp_path):
    _, _, test = loaded_data
    normalised.save(str(tmp_path / 'm'))
    loaded = lpm.LPM.load(str(tmp_path / 'm'), target=TARGET)
    meta = json.load(open(tmp_path / 'm' / 'metadata.json'))
    assert loaded.recipe.label == 'normalised' and loaded.label == normalised.label == meta['label']
    assert meta['label']['ref_median_ms'] > 0
    x = dataset.encodings(test)
    np.testing.assert_allclose(loaded.predict_ms(x), normalised.predict_ms(x), rtol=1e-6)
    assert 10 < np.median(loaded.predict_ms(x)) < 30  # ms, not a ratio to the reference

    def no_median(meta):
        del meta['label']['ref_median_ms']
    with pytest.raises(lpm.LPMError, match="label .* is not a latency or normalised label"):
        lpm.LPM.load(_edited(str(tmp_path / 'm'), tmp_path, no_median))

    def other_kind(meta):
        meta['label'] = {'kind': 'latency'}
    with pytest.raises(lpm.LPMMismatchError, match="label .* does not match the recipe's 'normalised'"):
        lpm.LPM.load(_edited(str(tmp_path / 'm'), tmp_path, other_kind))


def test_normalised_label_needs_ref_ms(loaded_data):
    _, train, _ = loaded_data
    model = lpm.LPM(dataclasses.replace(FAST, label='normalised', epochs=1))
    with pytest.raises(table_lib.TableError, match='no ref_ms column'):
        model.train(train.drop(columns=['ref_ms']), progress=False)
    bad = train.copy()
    bad.iloc[4, bad.columns.get_loc('ref_ms')] = 0.0
    with pytest.raises(table_lib.TableError, match='ref_ms .* non-positive at row 4'):
        model.train(bad, progress=False)


# ---- command line ----

def _run(module, argv, capsys, monkeypatch):
    """Runs a tool as `python -m` would, but in-process (one TF process); returns (exit code, out, err)."""
    from absl import flags
    from tools import cli
    flags.FLAGS.unparse_flags()  # no flag values left over from the previous run
    monkeypatch.setattr('sys.argv', ['prog', *argv])
    with pytest.raises(SystemExit) as e:
        cli.run(module.main)
    out, err = capsys.readouterr()
    return e.value.code or 0, out, err


def test_recipe_flags_round_trip_to_the_recipe():
    """Every LPMRecipe field is a flag (cells keeps its name --encode_cells), default the paper's."""
    from absl import flags
    from tools import cli
    names = cli.flag_fields(lpm.LPMRecipe)
    assert names['encode_cells'] == ('cells',) and len(names) == len(dataclasses.fields(lpm.LPMRecipe))
    values = flags.FlagValues()
    cli.define_flags(lpm.LPMRecipe, flag_values=values)
    values(['prog'])
    assert cli.config_from_flags(lpm.LPMRecipe, flag_values=values) == lpm.PAPER_RECIPE
    values(['prog', '--encode_cells=both', '--lr=0.5', '--optimizer=adam', '--patience=3', '--val_fraction=0.1'])
    assert cli.config_from_flags(lpm.LPMRecipe, flag_values=values) == lpm.LPMRecipe(
        cells='both', lr=0.5, optimizer='adam', patience=3, val_fraction=0.1)


def test_cli_trains_and_writes_model_dir(table, tmp_path, capsys, monkeypatch, repo_root):
    from tools import train_lpm
    model_dir = str(tmp_path / 'model')
    argv = [f'--flagfile={os.path.join(repo_root, "configs", "lpm_paper.cfg")}',
            f'--tables={table}', f'--model_dir={model_dir}', '--epochs=3', '--max_train_rows=400',
            '--noprogress']
    code, out, _ = _run(train_lpm, argv, capsys, monkeypatch)
    assert code == 0
    assert sorted(os.listdir(model_dir)) == ['logs', 'lpm.keras', 'metadata.json', 'metrics.json',
                                             'scatter.png']
    result = json.load(open(os.path.join(model_dir, 'metrics.json')))
    assert result['train_size'] == 400 and result['test_size'] == json.loads(out)['test_size'] > 200
    assert {'mae_ms', 'mre_pct', 'rmse_ms', 'share_within_10pct', 'share_within_5pct', 'kendall_tau',
            'spearman_rho', 'seconds'} <= set(result)
    assert result['recipe'] == {**vars(lpm.PAPER_RECIPE), 'epochs': 3}
    assert os.listdir(os.path.join(model_dir, 'logs'))
    assert lpm.LPM.load(model_dir, target=TARGET).metadata['recipe']['epochs'] == 3
    # A second run refuses to replace the model, in one line, and leaves it intact.
    before = open(os.path.join(model_dir, 'metadata.json')).read()
    code, _, err = _run(train_lpm, argv, capsys, monkeypatch)
    assert code == 1 and 'already exists' in err and err.count('\n') == 1
    assert open(os.path.join(model_dir, 'metadata.json')).read() == before


def test_cli_refuses_bad_table_in_one_line(latency_table, tmp_path, capsys, monkeypatch):
    from tools import train_lpm
    bad = _broken(latency_table, tmp_path, lambda d: d.loc.__setitem__((2, 'latency_ms'), float('nan')))
    code, _, err = _run(train_lpm, [f'--tables={bad}', f'--model_dir={tmp_path / "m"}'], capsys, monkeypatch)
    assert code == 1 and 'row 2' in err and err.count('\n') == 1
    assert not os.path.exists(tmp_path / 'm')


def test_sweep_writes_table_and_plot(table, tmp_path, capsys, monkeypatch):
    from tools import lpm_sweep
    out_dir = str(tmp_path / 'sweep')
    code, _, _ = _run(lpm_sweep, [f'--tables={table}', f'--model_dir={out_dir}', '--sizes=150,99999',
                                  '--epochs=2', '--noprogress'], capsys, monkeypatch)
    assert code == 0
    result = pd.read_csv(os.path.join(out_dir, 'sweep.csv'))
    n_train = len(dataset.split(dataset.load_tables([table]))[0])
    assert result['train_rows'].tolist() == [150, n_train]
    assert result['test_size'].nunique() == 1 and os.path.exists(os.path.join(out_dir, 'sweep.png'))
    from ladnas_tf.lpm import training
    assert training.resolve_sizes(['all', '50'], 40) == [40]


def test_cli_normalised_label(loaded_data, tmp_path, capsys, monkeypatch):
    from tools import train_lpm
    path, _, _ = loaded_data
    model_dir = str(tmp_path / 'model')
    code, out, _ = _run(train_lpm, [f'--tables={path}', f'--model_dir={model_dir}', '--label=normalised',
                                    '--epochs=3', '--max_train_rows=200', '--noprogress'], capsys, monkeypatch)
    assert code == 0
    result = json.load(open(os.path.join(model_dir, 'metrics.json')))
    assert result['label']['kind'] == 'normalised' and result['recipe']['label'] == 'normalised'
    # Errors against the measured ms, and against load-normalised and quiet-only test labels.
    assert result['ref_median_ms'] == result['label']['ref_median_ms'] == json.loads(out)['ref_median_ms']
    assert result['vs_normalised']['n'] == result['test_size'] > result['quiet']['n'] > 0
    assert lpm.LPM.load(model_dir).label == result['label']


# ---- hostile LPM directories: accepted and usable, or one LPMError line ----

_SWAPS = [None, True, 0, -1.5, float('nan'), 'text', [], {}, [1, 2]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_metadata_loads_or_fails_in_one_line(saved, tmp_path, data):
    meta = json.load(open(os.path.join(saved, 'metadata.json')))
    path = os.path.join(str(tmp_path), 'mutated')
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(saved, path)
    where = meta
    keys = data.draw(st.lists(st.sampled_from(['format', 'signature', 'recipe', 'cells', 'input_size', 'label',
                                               'scaling', 'target', 'setting', 'kind', 'mean', 'std',
                                               'ref_median_ms', 'epochs', 'cells']), min_size=1, max_size=2))
    for key in keys[:-1]:
        if isinstance(where.get(key), dict):
            where = where[key]
    if data.draw(st.booleans()):
        where.pop(keys[-1], None)
    else:
        where[keys[-1]] = data.draw(st.sampled_from(_SWAPS))
    whole = data.draw(st.sampled_from([meta, meta, [meta], 'meta', 3]))
    with open(os.path.join(path, 'metadata.json'), 'w') as f:
        json.dump(whole, f)
    try:
        model = lpm.LPM.load(path)
    except lpm.LPMError as e:
        assert '\n' not in str(e)
        return
    assert np.isfinite(model.predict_ms(np.zeros((1, model.input_size)))).all()


@pytest.mark.parametrize('damage', ['truncate', 'garbage', 'missing', 'directory'])
def test_a_damaged_model_file_is_named_as_such(saved, tmp_path, damage):
    path = str(tmp_path / 'm')
    shutil.copytree(saved, path)
    model_file = os.path.join(path, lpm.MODEL_FILE)
    data = open(model_file, 'rb').read()
    os.remove(model_file)
    if damage == 'truncate':
        open(model_file, 'wb').write(data[:len(data) // 2])
    elif damage == 'garbage':
        open(model_file, 'wb').write(b'\x00' * 1000)
    elif damage == 'directory':
        os.mkdir(model_file)
    with pytest.raises(lpm.LPMError, match='lpm.keras: (not a readable Keras model|missing)') as e:
        lpm.LPM.load(path)
    assert '\n' not in str(e.value)


def test_an_lpm_path_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / 'lpm').write_text('')
    with pytest.raises(lpm.LPMError, match='not an LPM directory \\(a file\\)'):
        lpm.LPM.load(str(tmp_path / 'lpm'))


def test_cli_diverged_training_leaves_nothing_behind(table, tmp_path, capsys, monkeypatch):
    from tools import train_lpm
    argv = [f'--tables={table}', f'--model_dir={tmp_path / "m"}', '--epochs=5', '--lr=1e12',
            '--max_train_rows=200', '--noprogress']
    code, _, err = _run(train_lpm, argv, capsys, monkeypatch)
    assert code == 1 and 'diverged' in err and err.count('\n') == 1
    assert os.listdir(tmp_path) == []  # neither the model directory nor its .partial staging
