"""Replicas and workers: the tf.distribute strategy by name, the cluster of TF_CONFIG, who writes what.

--strategy=multi_worker is tf.distribute.MultiWorkerMirroredStrategy over the cluster TF_CONFIG
describes. It configures TensorFlow's collective ops, which must happen before TensorFlow runs its
first op: the tools create the strategy first thing in main (make_strategy), before loading data or
a predictor; a program using the library does the same.

Every worker runs the same loop on its share of each global batch; only the chief writes the run
directory (settings, TensorBoard, summary, drawings, checkpoints). As TensorFlow's multi-worker guide
prescribes, the other workers still save their checkpoints at the same steps (saving may need every
worker), into a temporary directory of their own outside the run directory, removed when they end.
All workers restore from the chief's checkpoints, so the run directory must be one path every worker
sees (one machine, or a shared file system such as NFS).
"""
import contextlib
import hashlib
import json
import os
import shutil
import tempfile

import tensorflow as tf

from ladnas_tf.bad_input import BadInput

STRATEGIES = ('default', 'mirrored', 'multi_worker')
TF_CONFIG = 'TF_CONFIG'


class DistributeError(BadInput):
    """A strategy or cluster that cannot be used; the message is one line naming the problem."""


def cluster_from_env(environ=os.environ):
    """(cluster {job: [host:port, ...]}, task type, task index) of TF_CONFIG, checked: a malformed
    TF_CONFIG is refused in one line naming what is wrong, not a traceback of TensorFlow's resolver."""
    text = environ.get(TF_CONFIG, '').strip()
    if not text:
        raise DistributeError(f'{TF_CONFIG} is not set: --strategy=multi_worker reads the cluster from it, '
                              'e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                              '"task": {"type": "worker", "index": 0}}')
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise DistributeError(f'{TF_CONFIG} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})') from None
    if not isinstance(spec, dict):
        raise DistributeError(f'{TF_CONFIG} must be a JSON object with "cluster" and "task", got {text[:80]}')
    cluster, task = spec.get('cluster'), spec.get('task')
    if not isinstance(cluster, dict) or not cluster:
        raise DistributeError(f'{TF_CONFIG} has no "cluster" object of jobs (e.g. "worker": ["host:port", ...])')
    for job, addresses in cluster.items():
        if job not in ('chief', 'worker'):
            raise DistributeError(f'{TF_CONFIG} cluster job {job!r}: multi_worker takes "chief" and "worker" jobs')
        if not isinstance(addresses, list) or not addresses:
            raise DistributeError(f'{TF_CONFIG} cluster job {job!r} must list "host:port" addresses')
        for address in addresses:
            host, _, port = str(address).rpartition(':')
            if not isinstance(address, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise DistributeError(f'{TF_CONFIG} cluster job {job!r}: {address!r} is not "host:port"')
    if len(cluster.get('chief', [])) > 1:
        raise DistributeError(f'{TF_CONFIG} lists {len(cluster["chief"])} chiefs; there is at most one')
    if not isinstance(task, dict) or 'type' not in task or 'index' not in task:
        raise DistributeError(f'{TF_CONFIG} needs "task": {{"type": ..., "index": ...}} (this worker\'s place)')
    task_type, index = task['type'], task['index']
    if task_type not in cluster:
        raise DistributeError(f'{TF_CONFIG} task type {task_type!r} is not a job of the cluster '
                              f'({", ".join(cluster)})')
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise DistributeError(f'{TF_CONFIG} task index {index!r} is not one of the {len(cluster[task_type])} '
                              f'{task_type!r} tasks')
    return cluster, task_type, index


def make_strategy(name='default'):
    """The tf.distribute strategy by name: default (this process's device), mirrored (the local devices),
    multi_worker (the cluster in TF_CONFIG; create it before TensorFlow runs any op)."""
    if name == 'default':
        return tf.distribute.get_strategy()
    if name == 'mirrored':
        return tf.distribute.MirroredStrategy()
    if name != 'multi_worker':
        raise DistributeError(f'unknown strategy {name!r} (known: {", ".join(STRATEGIES)})')
    cluster_from_env()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as e:
        if 'program startup' not in str(e):
            raise
        raise DistributeError('the multi_worker strategy must be created before TensorFlow runs any op '
                              '(create it first thing in the program)') from None


def workers(strategy):
    """How many worker processes take part (1 without a cluster)."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs) if spec.jobs else 1


def is_chief(strategy):
    """Whether this process writes the run directory: the chief of a cluster, or the only process."""
    return bool(strategy.extended.should_checkpoint)


def task_name(strategy):
    """'worker1', 'chief0', ... of a cluster's process ('' alone)."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    return f'{resolver.task_type}{resolver.task_id}' if resolver is not None and resolver.task_type else ''


@contextlib.contextmanager
def write_dir(run_dir, strategy):
    """The directory this process writes checkpoints to: the run directory on the chief; elsewhere a
    temporary directory of this worker's own, outside the run directory, removed on the way out. Its
    name is fixed by the run directory and the task, so that a worker restarted after a kill first
    removes what the killed one left."""
    if is_chief(strategy):
        yield run_dir
        return
    digest = hashlib.sha256(os.path.realpath(run_dir).encode()).hexdigest()[:12]
    temp = os.path.join(tempfile.gettempdir(), f'ladnas_tf-{task_name(strategy)}-{digest}')
    shutil.rmtree(temp, ignore_errors=True)
    os.makedirs(temp)
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def any_worker(strategy, flag):
    """True when `flag` is true on any worker: one decision on all of them, for choices read from a
    worker's own clock (a checkpoint every N seconds) that every worker must take at the same step."""
    if workers(strategy) == 1:
        return bool(flag)
    votes = strategy.run(lambda: tf.constant(1.0 if flag else 0.0))
    return float(strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)) > 0


def barrier(strategy):
    """Waits until every worker gets here: the others stay until the chief has written the outputs, so
    that no worker's exit looks like a failure to the ones still working."""
    any_worker(strategy, True)


def split_batch(strategy, batch):
    """One global batch (a tuple of tensors, the same on every worker) as the strategy's distributed
    value: replica r of R gets the r-th of R contiguous shares. Every worker reads the whole global
    batch (as tf.data's DATA auto-sharding does), so N replicas see exactly the batch one process sees."""
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return batch
    size = int(batch[0].shape[0]) // replicas

    def share(context):
        start = context.replica_id_in_sync_group * size
        return tuple(t[start:start + size] for t in batch)
    return strategy.experimental_distribute_values_from_function(share)


def split_batches(strategy, dataset):
    """The global batches of a dataset as distributed values (split_batch). A plain iterator per worker,
    not strategy.experimental_distribute_dataset: under MultiWorkerMirroredStrategy that one's
    MultiDeviceIterator hangs in its destructor when a loop stops early (seen with TensorFlow 2.21)."""
    for batch in dataset:
        yield split_batch(strategy, batch)
