"""Several workers: TF_CONFIG's checks, and real worker processes on loopback ports (workers.py) running
the search: the same result as one process on the same global batch, a killed worker resumed, and
nothing of a non-chief worker in the run directory."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

from ladnas_tf import distribute, search

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workers  # noqa: E402

GOOD = {'cluster': {'worker': ['127.0.0.1:2222', '127.0.0.1:2223']}, 'task': {'type': 'worker', 'index': 1}}


@given(st.text(max_size=80) | st.recursive(
    st.none() | st.booleans() | st.integers(-2, 3) | st.sampled_from(['worker', 'chief', 'ps', '127.0.0.1:1', 'a', '']),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(['cluster', 'task', 'type', 'index', 'worker', 'chief']), inner, max_size=3),
    max_leaves=8).map(json.dumps))
def test_any_tf_config_text_is_accepted_or_refused_in_one_line(text):
    """A parser of what the user types: whatever the text, a cluster and a valid task, or one line."""
    try:
        cluster, task_type, index = distribute.cluster_from_env({'TF_CONFIG': text})
    except distribute.DistributeError as e:
        assert str(e).startswith('TF_CONFIG') and '\n' not in str(e)
    else:
        assert 0 <= index < len(cluster[task_type])


def test_a_good_tf_config_names_the_cluster_and_this_task():
    cluster, task_type, index = distribute.cluster_from_env({'TF_CONFIG': json.dumps(GOOD)})
    assert (cluster, task_type, index) == (GOOD['cluster'], 'worker', 1)


@pytest.mark.parametrize('value, problem', [
    (None, 'TF_CONFIG is not set'),
    ('{"cluster": {"worker": ["a:1"]}', 'not valid JSON'),
    ('[1, 2]', 'must be a JSON object'),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "job 'ps'"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', 'is not "host:port"'),
    ('{"cluster": {"worker": ["a:1"]}}', 'needs "task"'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "type 'chief' is not a job"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', 'index 1 is not one of'),
])
def test_a_malformed_tf_config_is_one_line_naming_the_problem(value, problem):
    environ = {} if value is None else {'TF_CONFIG': value}
    with pytest.raises(distribute.DistributeError, match=problem) as e:
        distribute.cluster_from_env(environ)
    assert '\n' not in str(e.value)


def test_the_tool_refuses_a_malformed_tf_config_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, '-m', 'tools.search', '--strategy=multi_worker',
                          f'--model_dir={tmp_path / "run"}'], cwd=workers.REPO, capture_output=True, text=True,
                         env=workers.environment('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {}}'), timeout=300)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == ['error: TF_CONFIG needs "task": {"type": ..., "index": ...} '
                                               "(this worker's place)"]
    assert not (tmp_path / 'run').exists()


# ---- real workers ----

# The tool's quick search at a tiny scale: 8x8 digits, C=4, 2 cells, global batch 8, 2 epochs of 3 steps.
SEARCH = ['-m', 'tools.search', '--dataset=digits', '--image_size=8', '--channels=4', '--layers=2', '--batch_size=8',
          '--epochs=2', '--max_steps_per_epoch=3', '--lambda_=0', '--lpm=', '--measure_latency=false',
          '--progress=false', '--checkpoint_every=0']
# float32 sums split over two workers are added in another order than in one process: after 6 first-order
# steps the weights, BN statistics and alphas agree to this absolute tolerance (measured: 3.6e-7 at most),
# the genotype exactly. Training two workers against one process with two replicas: bit-identical (measured).
TOLERANCE = 1e-5


def _checkpoint(model_dir):
    import tensorflow as tf
    reader = tf.train.load_checkpoint(os.path.join(model_dir, 'checkpoints'))
    weights = ('model/', 'model_weights/', 'model_variables/')  # the search's and the training's
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith(weights)]
    return {n: reader.get_tensor(n) for n in names}


def _left_by_worker(temp):
    """What the non-chief worker left in its temporary place (autograph's own files aside)."""
    return [name for name in os.listdir(temp) if name.startswith('ladnas_tf-')]


def _assert_same_search(one_dir, many_dir):
    one, many = (json.load(open(os.path.join(d, search.SUMMARY_FILE))) for d in (one_dir, many_dir))
    assert (many['replicas'], one['replicas']) == (2, 1)
    assert many['genotype'] == one['genotype'] and many['steps'] == one['steps'] == 6
    a, b = _checkpoint(one_dir), _checkpoint(many_dir)
    assert a.keys() == b.keys() and len(a) > 50
    worst = max(float(np.abs(a[n] - b[n]).max()) for n in a)
    assert worst <= TOLERANCE, worst
    return worst


@pytest.fixture(scope='module')
def single(tmp_path_factory):
    """The search in one process, no strategy: the reference."""
    model_dir = str(tmp_path_factory.mktemp('single') / 'run')
    out = workers.run_single(SEARCH + [f'--model_dir={model_dir}'], timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    return model_dir


def _cluster(model_dir, tmp_path, kill_worker_at=None, name='cluster'):
    """The search on two workers; worker 1's temporary files under tmp_path/worker1_tmp, their output
    under tmp_path/name."""
    temp = tmp_path / 'worker1_tmp'
    temp.mkdir(exist_ok=True)
    extra = {1: {'TMPDIR': str(temp)}}
    if kill_worker_at is not None:
        extra[1]['LADNAS_TF_KILL_AT_STEP'] = str(kill_worker_at)
    results = workers.run_cluster(SEARCH + ['--strategy=multi_worker', f'--model_dir={model_dir}'], 2,
                                  timeout=1500, extra_env=extra, log_dir=str(tmp_path / name))
    return results, temp


@pytest.mark.slow
def test_two_workers_search_as_one_process_on_the_same_global_batch(single, tmp_path):
    model_dir = str(tmp_path / 'run')
    (chief, other), temp = _cluster(model_dir, tmp_path)
    assert chief.returncode == 0 and other.returncode == 0, chief.stderr[-3000:] + other.stderr[-3000:]
    assert chief.stdout.splitlines()[0] == other.stdout.splitlines()[0]  # 'genotype: ...' on both
    _assert_same_search(single, model_dir)
    # Only the chief's outputs in the run directory; the other worker's checkpoints went to its own
    # temporary directory, removed when it ended.
    assert sorted(os.listdir(model_dir)) == sorted(search.OUTPUTS)
    assert _left_by_worker(temp) == []


@pytest.mark.slow
def test_a_killed_worker_resumes_and_ends_as_an_uninterrupted_run(single, tmp_path):
    """Worker 1 SIGKILLed after step 4 (the epoch-end checkpoint is step 3): the chief cannot go on
    without it and stops; the same command on both workers resumes at step 3 and ends as one process."""
    model_dir = str(tmp_path / 'run')
    (chief, victim), _ = _cluster(model_dir, tmp_path, kill_worker_at=4, name='killed')
    assert victim.returncode == -9, victim.stderr[-3000:]
    assert chief.returncode != 0
    assert not os.path.exists(os.path.join(model_dir, search.SUMMARY_FILE))
    assert 'ckpt-3' in open(os.path.join(model_dir, 'checkpoints', 'checkpoint')).read()
    (chief, other), temp = _cluster(model_dir, tmp_path, name='resumed')
    assert chief.returncode == 0 and other.returncode == 0, chief.stderr[-3000:] + other.stderr[-3000:]
    assert 'resumed' in chief.stderr and 'resumed' in other.stderr
    _assert_same_search(single, model_dir)
    assert _left_by_worker(temp) == []


# ---- training ----

# The evaluation network's BN normalises each replica's share on its own (DARTS's multi-GPU training
# does too), so the reference of two workers is one process with two replicas on the same global batch.
TRAIN_FLAGS = dict(channels=4, layers=2, epochs=2, batch_size=8, auxiliary=False, cutout=0, augment=None,
                   drop_path_prob=0.0, learning_rate=0.05)
TRAIN_REFERENCE = '''
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
tf.config.experimental.enable_op_determinism()
from ladnas_tf import genotypes, train
recipe = train.Recipe(**json.loads(sys.argv[3]))
train.train(genotypes.DARTS_V2, recipe, sys.argv[1], sys.argv[2], verbose=0,
            strategy=tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))
'''


def _image_folder(root, per_class=(('train', 16), ('test', 4))):
    """Two classes of 8x8 PNGs (a bright half, plus noise): 32 training images, 8 test images."""
    import tensorflow as tf
    rng = np.random.default_rng(0)
    for split, count in per_class:
        for k in range(2):
            os.makedirs(root / split / f'c{k}')
            for i in range(count):
                image = rng.integers(0, 60, (8, 8, 3))
                image[:, 4 * k:4 * k + 4] += 180
                (root / split / f'c{k}' / f'{i}.png').write_bytes(
                    tf.io.encode_png(tf.constant(image.astype(np.uint8))).numpy())
    return str(root)


@pytest.mark.slow
def test_two_workers_train_as_one_process_with_two_replicas(tmp_path):
    folder = _image_folder(tmp_path / 'images')
    reference = workers.run_single(['-c', TRAIN_REFERENCE, str(tmp_path / 'one'), folder, json.dumps(TRAIN_FLAGS)],
                                   timeout=1500)
    assert reference.returncode == 0, reference.stderr[-3000:]
    flags = [f'--{k}={"none" if v is None else str(v).lower() if isinstance(v, bool) else v}'
             for k, v in TRAIN_FLAGS.items()]
    temp = tmp_path / 'worker1_tmp'
    temp.mkdir()
    results = workers.run_cluster(['-m', 'tools.train', '--genotype=DARTS_V2', f'--dataset={folder}', *flags,
                                   '--verbose=0', '--strategy=multi_worker', f'--model_dir={tmp_path / "two"}'],
                                  2, timeout=1500, extra_env={1: {'TMPDIR': str(temp)}}, log_dir=str(tmp_path))
    assert all(r.returncode == 0 for r in results), results[0].stderr[-3000:] + results[1].stderr[-3000:]
    one, two = (json.load(open(tmp_path / d / 'summary.json')) for d in ('one', 'two'))
    assert one['replicas'] == two['replicas'] == 2 and one['train_loss'] == pytest.approx(two['train_loss'], rel=1e-5)
    a, b = _checkpoint(str(tmp_path / 'one')), _checkpoint(str(tmp_path / 'two'))
    assert a.keys() == b.keys() and len(a) > 20
    worst = max(float(np.abs(a[n] - b[n]).max()) for n in a)
    assert worst <= TOLERANCE, worst
    assert _left_by_worker(temp) == []


def test_a_non_chief_worker_writes_nothing_into_the_run_directory(tmp_path):
    """Two real workers train a one-cell network for one step: the run directory holds the chief's files
    only; the other worker's checkpoints and models went to its own temporary directory, now removed."""
    folder = _image_folder(tmp_path / 'images', (('train', 4), ('test', 1)))
    model_dir, temp = tmp_path / 'run', tmp_path / 'worker1_tmp'
    temp.mkdir()
    results = workers.run_cluster(['-m', 'tools.train', '--genotype=DARTS_V2', f'--dataset={folder}', '--channels=2',
                                   '--layers=1', '--epochs=1', '--batch_size=8', '--auxiliary=false', '--cutout=0',
                                   '--augment=none', '--verbose=0', '--strategy=multi_worker',
                                   f'--model_dir={model_dir}'],
                                  2, timeout=900, extra_env={1: {'TMPDIR': str(temp)}}, log_dir=str(tmp_path))
    assert all(r.returncode == 0 for r in results), results[0].stderr[-3000:] + results[1].stderr[-3000:]
    assert sorted(os.listdir(model_dir)) == ['checkpoints', 'elapsed.json', 'final.keras', 'history.json', 'logs',
                                             'run_config.json', 'summary.json']
    assert sorted(os.listdir(model_dir / 'checkpoints')) == ['checkpoint', 'ckpt-1.data-00000-of-00001',
                                                             'ckpt-1.index']
    said = [line for line in results[1].stderr.splitlines() if 'the chief writes' in line]
    assert len(said) == 1 and str(temp) in said[0]  # its checkpoints went there
    assert _left_by_worker(temp) == []
    assert json.load(open(model_dir / 'summary.json'))['replicas'] == 2
