"""What the LPM tools take from their inputs: tables through the one reader (a partial last row left out,
the file untouched), only targets this code knows, and never a predictor of one numeric format replaced by
one of the other unless forced."""
import json

import pytest

from ladnas_tf import search_space
from ladnas_tf.graph.setting import Setting
from ladnas_tf.lpm import dataset, model as lpm
from ladnas_tf.profiling import table

from conftest import folder_bytes

SETTING = Setting().key


def _rows(latency_table, n, target='cpu_tflite', seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    genotypes = {search_space.genotype_id(g): g for g in (search_space.sample_genotype(rng) for _ in range(n))}
    return [latency_table.row(g, 10.0 + k % 7, target, SETTING, ref_ms=9.0) for k, g in enumerate(genotypes.values())]


def _table(latency_table, path, n=40, target='cpu_tflite', **description):
    return latency_table.write(path, _rows(latency_table, n, target),
                               {'target': target, 'setting': SETTING, 'device': 'test cpu', 'threads': 1,
                                **description})


def _cut_last_row(path):
    """The table as a kill during its last write leaves it: the last row without its last 5 bytes (and
    newline); what remains of it still parses as numbers."""
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:-6])
    lines = data.splitlines()
    return [line.split(b',')[0].decode() for line in lines[1:-1]], lines[-1].split(b',')[0].decode()


# ---- the one reader ----

def test_load_tables_leaves_out_a_partial_last_row_and_the_file_untouched(latency_table, tmp_path):
    path = _table(latency_table, tmp_path / 't.csv')
    whole, partial = _cut_last_row(path)
    before = folder_bytes(tmp_path)
    df = dataset.load_tables([path])
    assert list(df['arch_id']) == whole and partial not in set(df['arch_id'])
    assert folder_bytes(tmp_path) == before


@pytest.mark.parametrize('meta', [True, False])
def test_a_table_of_an_unknown_target_is_refused_in_one_line(latency_table, tmp_path, meta):
    path = latency_table.write(tmp_path / 't.csv', _rows(latency_table, 6, target='tpu'),
                               {'target': 'tpu', 'setting': SETTING} if meta else None)
    with pytest.raises(table.TableError, match="unknown target 'tpu' \\(known: cpu_tflite,") as error:
        dataset.load_tables([path])
    assert '\n' not in str(error.value)


def _train(run_tool, *args):
    return run_tool('train_lpm', *args, '--epochs=2', '--batch_size=16', '--noprogress', timeout=900)


@pytest.mark.slow
def test_train_lpm_trains_on_whole_rows_only(latency_table, tmp_path, run_tool):
    path = _table(latency_table, tmp_path / 't.csv')
    whole, _ = _cut_last_row(path)
    before = folder_bytes(tmp_path)
    model_dir = tmp_path / 'lpm'
    done = _train(run_tool, f'--tables={path}', f'--model_dir={model_dir}')
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'ignoring a partial last row' in done.stderr
    with open(model_dir / 'metrics.json') as f:
        metrics = json.load(f)
    assert metrics['train_size'] + metrics['val_size'] + metrics['test_size'] == len(whole)
    assert {k: v for k, v in folder_bytes(tmp_path).items() if not k.startswith('lpm')} == before


# ---- numeric formats: an int8 table never silently meets a float32 predictor ----

@pytest.mark.slow
@pytest.mark.parametrize('predictor_target, table_target, description', [
    ('cpu_tflite', 'cpu_tflite_int8', {}),                        # int8 by its target
    ('cpu_tflite', 'ssh', {'numeric_format': 'int8'}),             # int8 by its description
    ('cpu_tflite_int8', 'cpu_tflite', {}),                        # the reverse
])
def test_train_lpm_refuses_to_replace_a_predictor_of_another_format(latency_table, predictors, tmp_path, run_tool,
                                                                     predictor_target, table_target, description):
    path = _table(latency_table, tmp_path / 't.csv', target=table_target, **description)
    model_dir = tmp_path / 'lpm'
    predictors.save(model_dir, target=predictor_target)
    before = folder_bytes(tmp_path)
    done = _train(run_tool, f'--tables={path}', f'--model_dir={model_dir}', '--overwrite')
    assert done.returncode == 1 and done.stderr.strip().count('\n') == 0, done.stderr[-2000:]
    assert 'predictor and the table is' in done.stderr and '--force_format' in done.stderr
    assert folder_bytes(tmp_path) == before
    if table_target == 'cpu_tflite_int8':  # forced, it is replaced
        forced = _train(run_tool, f'--tables={path}', f'--model_dir={model_dir}', '--overwrite', '--force_format')
        assert forced.returncode == 0, forced.stderr[-2000:]
        assert lpm.LPM.load(str(model_dir)).metadata['target'] == 'cpu_tflite_int8'
