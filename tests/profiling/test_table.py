"""The durable table: append, resume, refusal of other targets, corrupt tables, shards."""
import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ladnas_tf.profiling import profiler as profile, table
from ladnas_tf.profiling.measure import Stats

DESCRIPTION = {'target': 'cpu_tflite', 'setting': 'cifar-C4-N2-8px-b1-k10', 'device': 'cpu', 'threads': 1,
               'xnnpack': True}


def _rows(n, seed=0):
    stats = Stats(1.5, 1.6, 0.1, 0.1, 0.06, 20)
    for index, g in itertools.islice(profile.architectures(seed), n):
        yield profile.make_row(index, g, 100, 1000, stats, 1, DESCRIPTION, stats)


def test_rows_are_appended_and_read_back(tmp_path):
    path = str(tmp_path / 't.csv')
    t = table.LatencyTable(path, DESCRIPTION)
    rows = list(_rows(3))
    for r in rows:
        t.append(r)
    df = table.read(path)
    assert list(df['arch_id']) == [r['arch_id'] for r in rows]
    assert all(len(e) == 112 and e.count('1') == 8 for e in df['normal_encoding'])
    assert json.load(open(tmp_path / 't.meta.json'))['setting'] == DESCRIPTION['setting']


def test_reopening_resumes_and_refuses_duplicates(tmp_path):
    path = str(tmp_path / 't.csv')
    rows = list(_rows(3))
    t = table.LatencyTable(path, DESCRIPTION)
    t.append(rows[0])
    t2 = table.LatencyTable(path, DESCRIPTION)
    assert rows[0]['arch_id'] in t2 and len(t2) == 1
    with pytest.raises(table.TableError, match='already measured'):
        t2.append(rows[0])


def test_a_partial_last_row_from_a_kill_is_dropped_and_nothing_else(tmp_path):
    path = str(tmp_path / 't.csv')
    t = table.LatencyTable(path, DESCRIPTION)
    rows = list(_rows(3))
    t.append(rows[0])
    t.append(rows[1])
    with open(path, 'a') as f:
        f.write(rows[2]['arch_id'] + ',2,"[[')  # the kill hit mid-write
    t2 = table.LatencyTable(path, DESCRIPTION)
    assert len(t2) == 2
    t2.append(rows[2])
    assert list(table.read(path)['arch_id']) == [r['arch_id'] for r in rows]


@pytest.mark.parametrize('key', ['target', 'setting', 'threads', 'device'])
def test_a_table_of_another_target_or_setting_is_refused(tmp_path, key):
    path = str(tmp_path / 't.csv')
    table.LatencyTable(path, DESCRIPTION).append(next(_rows(1)))
    before = open(path).read()
    other = {**DESCRIPTION, key: 'other'}
    with pytest.raises(table.TableError, match=key) as e:
        table.LatencyTable(path, other)
    assert '\n' not in str(e.value)
    assert open(path).read() == before


def test_corrupt_tables_get_one_line_errors(tmp_path):
    path = tmp_path / 't.csv'
    table.LatencyTable(str(path), DESCRIPTION).append(next(_rows(1)))
    text = path.read_text()
    path.write_text(text.replace(',1.5,', ',nan,'))
    with pytest.raises(table.TableError, match='latency_ms is NaN'):
        table.read(str(path))
    path.write_text('arch_id,latency_ms\nabc,1.0\n')
    with pytest.raises(table.TableError, match='missing column'):
        table.read(str(path))
    (tmp_path / 't.meta.json').write_text('{not json')
    with pytest.raises(table.TableError, match='missing or corrupt'):
        table.LatencyTable(str(path), DESCRIPTION)


def test_shards_are_disjoint_and_cover_the_stream():
    n, shards = 60, 3
    whole = [i for i, _ in itertools.islice(profile.architectures(7), n)]
    parts = [[i for i, _ in itertools.islice(profile.architectures(7, s, shards), n // shards)]
             for s in range(shards)]
    assert sorted(sum(parts, [])) == whole
    assert all(set(a).isdisjoint(b) for a, b in itertools.combinations(parts, 2))
    same = [g for _, g in itertools.islice(profile.architectures(7, 1, shards), 5)]
    again = [g for _, g in itertools.islice(profile.architectures(7, 1, shards), 5)]
    assert same == again


def test_bad_shard_is_refused():
    with pytest.raises(ValueError, match='shard_index'):
        next(profile.architectures(0, 3, 3))


def test_the_device_names_the_cpu_generation_not_only_its_marketing_name(tmp_path):
    # Two VMs both called 'AMD EPYC' timed the same network at 18.4 and 8.9 ms: their tables must not mix.
    from ladnas_tf.profiling import agent
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 26\nmodel\t\t: 2\n'
                    'flags\t\t: fpu sse avx avx2 avx512f\n\nprocessor\t: 1\nmodel name\t: other\n')
    assert agent.cpu_model(str(info)) == 'AMD EPYC (family 26 model 2, avx512f)'
    info.write_text('processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 23\nmodel\t\t: 49\nflags\t\t: avx avx2\n')
    assert agent.cpu_model(str(info)) == 'AMD EPYC (family 23 model 49, avx2)'


# ---- hostile tables: what resuming a table accepts is what training on it accepts ----

def _table_with(tmp_path, rows=3):
    path = tmp_path / 't.csv'
    t = table.LatencyTable(str(path), DESCRIPTION)
    for r in _rows(rows):
        t.append(r)
    return path


MUTATIONS = {
    'latency_ms': ['nan', 'inf', '-1', '0', 'fast', ''],
    'ref_ms': ['nan', '-inf', 'x'],
    'normal_encoding': ['0' * 111, '1' * 112, '2' + '0' * 111, '0' * 113],
    'reduce_encoding': ['01' * 56],
}


@pytest.mark.parametrize('column,value', [(c, v) for c, vs in MUTATIONS.items() for v in vs])
def test_a_resumed_table_with_a_broken_cell_is_refused_naming_the_row(tmp_path, column, value):
    import pandas as pd
    path = _table_with(tmp_path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[1, column] = value
    df.to_csv(path, index=False)
    before = path.read_bytes()
    with pytest.raises(table.TableError, match=f'{column}.* row 1') as e:
        table.LatencyTable(str(path), DESCRIPTION)
    assert '\n' not in str(e.value)
    assert path.read_bytes() == before  # nothing rewritten


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_row_with_any_cell_replaced_is_accepted_only_if_valid(tmp_path, data):
    import pandas as pd
    for leftover in tmp_path.iterdir():  # hypothesis reuses the test's folder for every example
        leftover.unlink()
    path = _table_with(tmp_path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    column = data.draw(st.sampled_from(['latency_ms', 'ref_ms', 'normal_encoding', 'reduce_encoding']))
    value = data.draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                                st.text(alphabet='01 2x', max_size=120)))
    df.loc[0, column] = value
    df.to_csv(path, index=False)
    try:
        reopened = table.LatencyTable(str(path), DESCRIPTION)
    except table.TableError as e:
        assert '\n' not in str(e)
        return
    assert len(reopened) == 3  # accepted: then the value is one every reader can use
    checked = table.read(str(path))
    assert checked['latency_ms'].gt(0).all() and checked['ref_ms'].gt(0).all()


@pytest.mark.slow
def test_a_kill_at_any_byte_of_a_write_leaves_a_table_the_rerun_completes(tmp_path):
    """Cut at every byte offset of the header and of the two rows: reopening keeps what is whole, and
    appending what is missing gives the very file an uninterrupted run writes."""
    path = tmp_path / 't.csv'
    rows = list(_rows(2))
    t = table.LatencyTable(str(path), DESCRIPTION)
    for row in rows:
        t.append(row)
    whole = path.read_bytes()
    for cut in range(len(whole)):
        path.write_bytes(whole[:cut])
        t = table.LatencyTable(str(path), DESCRIPTION)
        for row in rows:
            if row['arch_id'] not in t:
                t.append(row)
        assert path.read_bytes() == whole, cut


def test_a_description_that_is_not_an_object_is_one_line(tmp_path):
    path = _table_with(tmp_path)
    (tmp_path / 't.meta.json').write_text('[1, 2]')
    with pytest.raises(table.TableError, match='not a JSON object'):
        table.LatencyTable(str(path), DESCRIPTION)


def test_a_converter_table_resumes_with_the_writer_and_notes_from_which_row(tmp_path):
    """A table from before the writer (no tflite_source: converted, like data/*.meta.json) is resumed by
    the writer, since both give the same file; the metadata then says from which row it was written."""
    path = str(tmp_path / 't.csv')
    rows = list(_rows(3))
    table.LatencyTable(path, DESCRIPTION).append(rows[0])
    writer = {**DESCRIPTION, 'tflite_source': 'writer'}
    resumed = table.LatencyTable(path, writer)
    resumed.append(rows[1])
    meta = json.load(open(tmp_path / 't.meta.json'))
    assert 'tflite_source' not in meta
    assert meta['tflite_source_changes'] == [{'tflite_source': 'writer', 'from_row': 1}]
    table.LatencyTable(path, writer).append(rows[2])  # the same source again: nothing noted
    table.LatencyTable(path, {**DESCRIPTION, 'tflite_source': 'converter'})
    assert json.load(open(tmp_path / 't.meta.json'))['tflite_source_changes'] == [
        {'tflite_source': 'writer', 'from_row': 1}, {'tflite_source': 'converter', 'from_row': 3}]


def test_a_new_table_records_its_tflite_source(tmp_path):
    table.LatencyTable(str(tmp_path / 't.csv'), {**DESCRIPTION, 'tflite_source': 'writer'})
    meta = json.load(open(tmp_path / 't.meta.json'))
    assert meta['tflite_source'] == 'writer' and 'tflite_source_changes' not in meta


def test_float32_and_int8_rows_never_share_a_table(tmp_path):
    """A remote target's table names its numeric format; one from before (no numeric_format) is float32."""
    path = str(tmp_path / 't.csv')
    adb = {**DESCRIPTION, 'target': 'adb'}
    table.LatencyTable(path, adb).append(next(_rows(1)))
    table.LatencyTable(path, {**adb, 'numeric_format': 'float32'})  # the same format, now recorded
    with pytest.raises(table.TableError, match='holds float32 latencies, this run times int8') as error:
        table.LatencyTable(path, {**adb, 'numeric_format': 'int8'})
    assert '\n' not in str(error.value)


# ---- a refusal touches nothing; the one reader leaves a partial last row out ----

def _with_partial_row(tmp_path):
    path = _table_with(tmp_path, rows=2)
    row = path.read_bytes().splitlines(keepends=True)[-1]
    with open(path, 'ab') as f:
        f.write(row[:-8])  # a kill cut the next row short: what is left still parses as numbers
    return path


@pytest.mark.parametrize('other', [{'device': 'another cpu'}, {'threads': 4}, {'target': 'ssh'},
                                   {'numeric_format': 'int8'}])
def test_refusing_a_table_of_another_device_leaves_it_byte_for_byte(tmp_path, other):
    path = _with_partial_row(tmp_path)
    meta = tmp_path / 't.meta.json'
    before = path.read_bytes(), meta.read_bytes()
    with pytest.raises(table.TableError) as e:
        table.LatencyTable(str(path), {**DESCRIPTION, **other})
    assert '\n' not in str(e.value)
    assert (path.read_bytes(), meta.read_bytes()) == before
    assert len(table.LatencyTable(str(path), DESCRIPTION)) == 2  # its own run repairs it, and only then
    assert path.read_bytes() == before[0][:before[0].rfind(b'\n') + 1]


def test_refusing_a_broken_row_leaves_the_partial_row_too(tmp_path):
    path = _with_partial_row(tmp_path)
    text = path.read_bytes()
    first_row_start = text.index(b'\n') + 1
    broken = text[:first_row_start] + text[first_row_start:].replace(b',1.5,', b',-1.5,', 1)
    path.write_bytes(broken)
    with pytest.raises(table.TableError, match='latency_ms'):
        table.LatencyTable(str(path), DESCRIPTION)
    assert path.read_bytes() == broken


def test_the_reader_leaves_out_a_partial_last_row_and_the_file_untouched(tmp_path):
    path = _with_partial_row(tmp_path)
    before = path.read_bytes()
    complete = [line.split(b',')[0].decode() for line in before.splitlines(keepends=True)[1:] if line.endswith(b'\n')]
    assert list(table.read(str(path))['arch_id']) == complete and len(complete) == 2
    assert path.read_bytes() == before
    path.write_bytes(before[:before.rfind(b'\n')] + b'\r')  # a whole row but its newline: still partial
    assert list(table.read(str(path))['arch_id']) == complete[:1]


def test_what_the_reader_keeps_is_what_the_profiler_keeps(tmp_path):
    path = _with_partial_row(tmp_path)
    read = set(table.read(str(path))['arch_id'])
    assert table.LatencyTable(str(path), DESCRIPTION).ids == read


def test_a_one_line_file_that_is_no_table_is_refused_not_removed(tmp_path):
    path = tmp_path / 'notes.csv'
    path.write_bytes(b'my notes, no newline')
    with pytest.raises(table.TableError, match='not a latency table') as e:
        table.LatencyTable(str(path), DESCRIPTION)
    assert '\n' not in str(e.value) and path.read_bytes() == b'my notes, no newline'
    assert not (tmp_path / 'notes.meta.json').exists()


def test_a_description_of_an_unknown_target_is_refused(tmp_path):
    path = _table_with(tmp_path)
    (tmp_path / 't.meta.json').write_text(json.dumps({**DESCRIPTION, 'target': 'tpu'}))
    before = path.read_bytes()
    for use in (lambda: table.read_description(str(tmp_path / 't.meta.json')),
                lambda: table.LatencyTable(str(path), DESCRIPTION)):
        with pytest.raises(table.TableError, match="unknown target 'tpu' \\(known: cpu_tflite, ") as e:
            use()
        assert '\n' not in str(e.value)
    assert path.read_bytes() == before
