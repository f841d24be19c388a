"""Profiling: sample architectures, convert them ahead in parallel, time them one by one, append rows.

Conversion (CPU-heavy) and timing never overlap: a batch of architectures is prepared by worker
processes, then timed serially in this process while the workers sit idle. Every `reference_every`
architectures a fixed reference network (DARTS_V2) is timed again, so drift shows in the table.
"""
import datetime
import json
import multiprocessing
import os

import numpy as np

from ladnas_tf import genotypes, search_space
from ladnas_tf.latency import measure
from ladnas_tf.latency.table import LatencyTable


def architectures(seed, shard_index=0, num_shards=1):
    """This shard's (index, genotype) sequence: the seed's stream of random genotypes, index mod shards."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f'shard_index must be in 0..{num_shards - 1}, got {shard_index}')
    rng = np.random.default_rng(seed)
    index = 0
    while True:
        genotype = search_space.sample_genotype(rng)
        if index % num_shards == shard_index:
            yield index, genotype
        index += 1


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def _bits(cell):
    return ''.join(str(int(b)) for b in search_space.encode_cell(cell))


def make_row(index, genotype, params, macs, stats, attempts, description):
    return {'arch_id': search_space.genotype_id(genotype), 'index': index,
            'normal': json.dumps(genotype.normal), 'reduce': json.dumps(genotype.reduce),
            'normal_encoding': _bits(genotype.normal), 'reduce_encoding': _bits(genotype.reduce),
            'params': params, 'macs': macs, 'latency_ms': round(stats.latency_ms, 5),
            'mean_ms': round(stats.mean_ms, 5), 'std_ms': round(stats.std_ms, 5),
            'iqr_ms': round(stats.iqr_ms, 5), 'cv': round(stats.cv, 5), 'runs': stats.runs,
            'attempts': attempts, 'target': description['target'],
            'setting': description['setting'], 'measured_at': _now()}


def _prepare(job):
    target, setting, genotype = job
    return target.prepare(genotype, setting)


def _worker_init():
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    os.sched_setaffinity(0, range(os.cpu_count()))  # conversion may use every core
    import tensorflow as tf
    tf.get_logger().setLevel('ERROR')  # the converter logs a warning per model


class Profiler:
    """Times architectures of one target and setting into one table."""

    def __init__(self, target, setting, table_path, warmup=5, runs=20, max_cv=0.05, max_attempts=3,
                 reference_every=50, workers=2, batch=8):
        target.check_available()
        self.target, self.setting = target, setting
        self.description = {**target.describe(), 'setting': setting.key, 'network': setting.network_kwargs(),
                            'protocol': {'warmup': warmup, 'runs': runs, 'max_cv': max_cv,
                                         'max_attempts': max_attempts}}
        self.table = LatencyTable(table_path, self.description)
        self.protocol = dict(warmup=warmup, runs=runs, max_cv=max_cv, max_attempts=max_attempts)
        self.reference_every, self.workers, self.batch = reference_every, workers, batch
        self._reference = None

    def time(self, artifact):
        return measure.measure(self.target.runner(artifact), **self.protocol)

    def _time_reference(self):
        if self._reference is None:
            self._reference = self.target.prepare(genotypes.DARTS_V2, self.setting)[0]
        stats, _ = self.time(self._reference)
        self.table.append_reference({'after_rows': len(self.table), 'latency_ms': round(stats.latency_ms, 5),
                                     'cv': round(stats.cv, 5), 'measured_at': _now()})
        return stats

    def _pending(self, count, seed, shard_index, num_shards):
        """The next `count` architectures of the shard that the table does not hold yet."""
        seen = set()
        for index, genotype in architectures(seed, shard_index, num_shards):
            arch_id = search_space.genotype_id(genotype)
            if arch_id in self.table or arch_id in seen:
                continue
            seen.add(arch_id)
            yield index, genotype
            if len(seen) >= count:
                return

    def run(self, count, seed=0, shard_index=0, num_shards=1, progress=None):
        """Measures until the table holds `count` architectures of this shard; returns rows added."""
        todo = max(0, count - len(self.table))
        pending = self._pending(todo, seed, shard_index, num_shards)
        added = 0
        ctx = multiprocessing.get_context('spawn')
        with ctx.Pool(self.workers, initializer=_worker_init, maxtasksperchild=100) as pool:
            while added < todo:
                jobs = [job for _, job in zip(range(self.batch), pending)]
                if not jobs:
                    break
                prepared = pool.map(_prepare, [(self.target, self.setting, g) for _, g in jobs])
                for (index, genotype), (artifact, params, macs) in zip(jobs, prepared):
                    if self.reference_every and len(self.table) % self.reference_every == 0:
                        self._time_reference()
                    stats, attempts = self.time(artifact)
                    self.table.append(make_row(index, genotype, params, macs, stats, attempts,
                                               self.description))
                    added += 1
                    if progress:
                        progress(added, todo, stats)
        return added


def repeatability(profiler, count, seed=0, path=None):
    """Re-times `count` measured architectures (prepared afresh) and returns the relative differences
    |second - first| / first: the noise floor that no latency predictor can beat on this table."""
    import pandas as pd
    from ladnas_tf.latency.table import _append, read
    df = read(profiler.table.path)
    rows = df.sample(n=min(count, len(df)), random_state=seed)
    path = path or os.path.splitext(profiler.table.path)[0] + '.repeat.csv'
    done = set(pd.read_csv(path)['arch_id']) if os.path.exists(path) else set()
    rows = rows[~rows['arch_id'].isin(done)]
    jobs = [(profiler.target, profiler.setting,
             search_space.make_genotype(json.loads(r.normal), json.loads(r.reduce))) for r in rows.itertuples()]
    ctx = multiprocessing.get_context('spawn')
    with ctx.Pool(profiler.workers, initializer=_worker_init) as pool:
        for start in range(0, len(jobs), profiler.batch):
            chunk = jobs[start:start + profiler.batch]
            for job, r, (artifact, _, _) in zip(chunk, rows.iloc[start:].itertuples(),
                                                pool.map(_prepare, chunk)):
                stats, _ = profiler.time(artifact)
                _append(path, ('arch_id', 'first_ms', 'second_ms', 'rel_diff', 'measured_at'),
                        {'arch_id': r.arch_id, 'first_ms': r.latency_ms, 'second_ms': round(stats.latency_ms, 5),
                         'rel_diff': round(abs(stats.latency_ms - r.latency_ms) / r.latency_ms, 6),
                         'measured_at': _now()})
    rel = pd.read_csv(path)['rel_diff']
    return {'pairs': int(len(rel)), 'mean_rel_diff': float(rel.mean()),
            'median_rel_diff': float(rel.median()), 'p90_rel_diff': float(rel.quantile(0.9))}
