"""Every figure in the README and docs/ comes from a committed file that says how it was made: the
command, the commit, the date and the machine. Each benchmark writes them through benchmarks.write_json."""
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from benchmarks import tflite_writer_equivalence as equivalence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURE_FILES = sorted(glob.glob(os.path.join(ROOT, 'docs', 'benchmarks', '*.json'))) + [
    os.path.join(ROOT, 'docs', 'tflite_writer_equivalence.json')]


def test_there_are_figure_files():
    assert len(FIGURE_FILES) >= 8  # a glob that matched nothing would pass the test below vacuously


@pytest.mark.parametrize('path', FIGURE_FILES, ids=os.path.basename)
def test_every_figure_file_records_command_commit_date_and_machine(path):
    with open(path) as f:
        record = json.load(f)
    missing = [k for k in ('command', 'commit', 'date', 'machine') if not record.get(k)]
    assert not missing, f'{path} lacks {missing}'
    assert 'python' in record['command']
    assert re.fullmatch(r'[0-9a-f]{40}(\+dirty)?', record['commit']), record['commit']
    assert re.match(r'20\d\d-\d\d-\d\d', record['date']), record['date']
    assert isinstance(record['machine'], dict) and record['machine'].get('device') and record['machine'].get('cores')


def test_write_json_records_them_itself(tmp_path):
    """Run as a benchmark is: a module under python -m, in this clone."""
    out = tmp_path / 'figures.json'
    code = ('import sys, benchmarks; benchmarks.save_json(sys.argv[1], {"speed": 2.5, "machine": {"load": [1.0]}}, '
            '{"steps": 3})')
    subprocess.run([sys.executable, '-c', code, str(out), '--flag=1'], cwd=ROOT, check=True, timeout=120,
                   env={**os.environ, 'PYTHONPATH': ROOT})
    record = json.loads(out.read_text())
    assert record['speed'] == 2.5 and record['config'] == {'steps': 3}
    assert record['command'].endswith('python -c scratch/figures.json --flag=1')  # no folder of this machine
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if head:  # a clone (CI's is one): the figures name the commit they were made at
        assert record['commit'].split('+')[0] == head
    assert record['machine']['load'] == [1.0] and record['machine']['cores'] == os.cpu_count()
    assert re.fullmatch(r'20\d\d-\d\d-\d\d \d\d:\d\d UTC', record['date'])


def _report(seed, identical_named=4, differing=()):
    run = dict(architectures=104, identical=100 + identical_named, max_relative_output=1e-7 * (seed + 1),
               write_ms=10.0 + seed, timing_write_ms=5.0 + seed, cpu_minutes=6.0, differing=list(differing))
    return {'random_per_setting': 100, 'random_seeds': [seed],
            'settings': {'cifar': {**run, 'runs': {f'seed{seed}': run}}}}


def test_the_writer_equivalence_writes_command_commit_date_and_machine_itself(tmp_path):
    parts = []
    for seed in (0, 1):
        parts.append(tmp_path / f'seed{seed}.json')
        parts[-1].write_text(json.dumps({**_report(seed), 'command': 'an earlier run', 'provenance_note': 'old'}))
    equivalence.main([f'--merge={parts[0]},{parts[1]}', f'--output={tmp_path / "merged"}'])
    record = json.loads((tmp_path / 'merged.json').read_text())
    assert 'python' in record['command'] and record['command'] != 'an earlier run'
    assert 'provenance_note' not in record
    assert re.fullmatch(r'[0-9a-f]{40}(\+dirty)?|unknown', record['commit'])
    assert re.match(r'20\d\d-\d\d-\d\d', record['date']) and record['machine']['cores'] == os.cpu_count()


def test_the_writer_equivalence_merges_runs_of_two_seeds_itself():
    merged = equivalence.merge([_report(0), _report(1)])
    cifar = merged['settings']['cifar']
    assert merged['random_per_setting'] == 200 and merged['random_seeds'] == [0, 1]
    assert (cifar['architectures'], cifar['identical']) == (204, 204)  # the 4 published ones counted once
    assert cifar['write_ms'] == 10.0 and cifar['timing_write_ms'] == 5.0 and cifar['cpu_minutes'] == 12.0
    assert cifar['max_relative_output'] == 2e-7 and set(cifar['runs']) == {'seed0', 'seed1'}
    one_random_differs = [dict(name='random_3', genotype='g', difference='x')]
    merged = equivalence.merge([_report(0), {**_report(1, differing=one_random_differs)}])
    assert merged['settings']['cifar']['differing'] == one_random_differs
    with pytest.raises(SystemExit, match='share a seed'):
        equivalence.merge([_report(0), _report(0)])


def test_recorded_commands_name_no_folder_of_the_machine(tmp_path):
    """Paths outside the clone become scratch/<name>, inside it relative; in nested records too."""
    import benchmarks
    command = (f'python -m benchmarks.x --output={tmp_path}/out --merge={tmp_path}/a.json,docs/b.json '
               f'{ROOT}/docs/c.json -c 0')
    assert benchmarks.portable(command) == ('python -m benchmarks.x --output=scratch/out '
                                            '--merge=scratch/a.json,docs/b.json docs/c.json -c 0')
    path = tmp_path / 'r.json'
    benchmarks.write_json(str(path), {'settings': {'a': {'provenance': {'command': f'python x {tmp_path}/in'}}}})
    record = json.loads(path.read_text())
    assert record['settings']['a']['provenance']['command'] == 'python x scratch/in'
    assert str(tmp_path) not in path.read_text()
