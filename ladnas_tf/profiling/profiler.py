"""Profiling: sample architectures, make their files ahead in parallel, time them one by one, append rows.

A float32 file is written directly (graph.tflite_writer) where the target allows, else converted; the
table's metadata says which (`tflite_source`). Making files (CPU-heavy) and timing on this machine never
overlap: a batch of architectures is prepared by worker processes, then timed serially while the workers
sit idle; a device reached over ssh or adb times one batch while the host prepares the next. Every
measurement is bracketed by timings of a fixed reference network (DARTS_V2), recorded in the row
(`ref_ms`), so drift and interference show in the table and `latency_ms / ref_ms` cancels most of them.
A fleet (fleet.py: several devices of one model) times each batch on all its devices at once.
"""
import datetime
import json
import logging
import multiprocessing
import os

import numpy as np

from ladnas_tf import genotypes, search_space
from ladnas_tf.bad_input import BadInput
from ladnas_tf.profiling.fleet import Dispatch, Fleet
from ladnas_tf.profiling.table import LatencyTable, append_row, read


def architectures(seed, shard_index=0, num_shards=1):
    """This shard's (index, genotype) sequence: the seed's stream of random genotypes, index mod shards."""
    if not 0 <= shard_index < num_shards:
        raise BadInput(f'shard_index must be in 0..{num_shards - 1}, got {shard_index}')
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


def make_row(index, genotype, params, macs, stats, attempts, description, reference, device=''):
    """A table row; `device`: the host or serial that timed it (a fleet's rows name their device)."""
    return {'arch_id': search_space.genotype_id(genotype), 'index': index,
            'normal': json.dumps(genotype.normal), 'reduce': json.dumps(genotype.reduce),
            'normal_encoding': _bits(genotype.normal), 'reduce_encoding': _bits(genotype.reduce),
            'params': params, 'macs': macs, 'latency_ms': round(stats.latency_ms, 5),
            'mean_ms': round(stats.mean_ms, 5), 'std_ms': round(stats.std_ms, 5),
            'iqr_ms': round(stats.iqr_ms, 5), 'cv': round(stats.cv, 5), 'runs': stats.runs,
            'attempts': attempts, 'ref_ms': round(reference.latency_ms, 5), 'ref_cv': round(reference.cv, 5),
            'target': description['target'],
            'setting': description['setting'], 'measured_at': _now(), 'device': device}


def _prepare(job):
    target, setting, genotype = job
    return target.prepare(genotype, setting)


def _worker_init(cpus):
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    os.sched_setaffinity(0, cpus)  # every core the user allowed, not only the timing core
    # The converter logs a warning per model; TensorFlow's logger, set without importing TensorFlow,
    # which a worker writing files directly never needs.
    logging.getLogger('tensorflow').setLevel(logging.ERROR)


class Profiler:
    """Times architectures of one target (or a fleet.Fleet of several of one model) and setting into one
    table."""

    def __init__(self, target, setting, table_path, warmup=5, runs=20, max_cv=0.05, max_attempts=3,
                 reference_runs=5, workers=2, batch=8, worker_cpus=None):
        self.fleet = target if isinstance(target, Fleet) else Fleet([target])
        self.fleet.check_available()
        self.target, self.setting = self.fleet.targets[0], setting  # the first device prepares the files
        self.description = {**self.fleet.describe(), 'setting': setting.key, 'network': setting.network_kwargs(),
                            'reference': 'DARTS_V2',
                            'protocol': {'warmup': warmup, 'runs': runs, 'max_cv': max_cv,
                                         'max_attempts': max_attempts, 'reference_runs': reference_runs}}
        self.table = LatencyTable(table_path, self.description)
        self.protocol = dict(warmup=warmup, runs=runs, max_cv=max_cv, max_attempts=max_attempts,
                             reference_runs=reference_runs)
        self.workers, self.batch = workers, batch
        self.worker_cpus = set(worker_cpus or os.sched_getaffinity(0))
        self._reference = None

    def reference(self):
        """The reference network's file (DARTS_V2), made once."""
        if self._reference is None:
            self._reference = self.target.prepare(genotypes.DARTS_V2, self.setting)[0]
        return self._reference

    def time(self, artifact):
        """(Stats, reference Stats, attempts) of one prepared architecture, on the (first) device."""
        return self.target.measure(artifact, self.reference(), **self.protocol)

    def _time_on(self, target, artifact):
        if target is self.target:
            return self.time(artifact)
        return target.measure(artifact, self.reference(), **self.protocol)

    def _pending(self, count, stream):
        """The next `count` architectures of the stream that the table does not hold yet."""
        seen = set()
        if count <= 0:
            return
        for index, genotype in stream:
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
        return self._measure(self._pending(todo, architectures(seed, shard_index, num_shards)), todo, progress)

    def run_genotypes(self, chosen, progress=None):
        """Measures the given genotypes (a calibration set) that the table lacks; `index` is the position
        in the list. Returns rows added."""
        todo = len({search_space.genotype_id(g) for g in chosen} - self.table.ids)
        return self._measure(self._pending(todo, enumerate(chosen)), todo, progress)

    def _measure(self, pending, todo, progress):
        """Converts batches in the workers and times them on the devices (one thread each, in order with
        one device), this thread writing the rows. Devices on other machines (`overlaps_conversion`)
        have the next batch converted while they time this one."""
        overlap = self.fleet.overlaps_conversion
        self.reference()  # made once, before the devices share it
        added = 0
        ctx = multiprocessing.get_context('spawn')
        dispatch = Dispatch(self.fleet.targets, self._time_on)
        with ctx.Pool(self.workers, initializer=_worker_init, initargs=(self.worker_cpus,),
                      maxtasksperchild=100) as pool:
            def convert():
                jobs = [job for _, job in zip(range(self.batch), pending)]
                return jobs, pool.map_async(_prepare, [(self.target, self.setting, g) for _, g in jobs])
            try:
                jobs, converting = convert()
                while jobs or dispatch.in_flight:
                    for (index, genotype), (artifact, params, macs) in zip(jobs, converting.get() if jobs else ()):
                        dispatch.submit(artifact, (index, genotype, params, macs))
                    if overlap:  # convert the next batch while the devices time this one
                        jobs, converting = convert()
                    for job, device, stats, reference, attempts in dispatch.finished(keep_busy=overlap and bool(jobs)):
                        self.table.append(make_row(*job, stats, attempts, self.description, reference, device))
                        added += 1
                        if progress:
                            progress(added, todo, stats)
                    if not overlap:
                        jobs, converting = convert()
            finally:
                dispatch.close()
        return added


def measure_genotype(target, setting, genotype, **protocol):
    """One genotype timed as the table's rows are (bracketed by DARTS_V2): a dict of latency_ms,
    ref_ms, cv, params and macs. For a search's derived network, beside its predicted latency."""
    artifact, params, macs = target.prepare(genotype, setting)
    reference = target.prepare(genotypes.DARTS_V2, setting)[0]
    stats, ref, attempts = target.measure(artifact, reference, **protocol)
    return {'latency_ms': stats.latency_ms, 'cv': stats.cv, 'ref_ms': ref.latency_ms, 'attempts': attempts,
            'params': int(params), 'macs': int(macs)}


def time_files(target, files, runs=20, reference=None, warmup=5):
    """{name: latency_ms, cv, runs, attempts, reference_ms} of .tflite files ({name: bytes}) timed on a
    target that runs files, each bracketed by `reference` (default: the 'float32' file, else the first)
    as a table row is by DARTS_V2: the reference runs on the device too."""
    reference = reference or files.get('float32') or next(iter(files.values()))
    out = {}
    for name, content in files.items():
        stats, ref, attempts = target.measure(content, reference, warmup=warmup, runs=runs)
        out[name] = {'latency_ms': stats.latency_ms, 'cv': stats.cv, 'runs': stats.runs, 'attempts': attempts,
                     'reference_ms': ref.latency_ms}
    return out


def repeatability(profiler, count, seed=0, path=None):
    """Re-times `count` measured architectures (prepared afresh) and returns the relative differences
    |second - first| / first: the noise floor that no latency predictor can beat on this table."""
    import pandas as pd
    df = read(profiler.table.path)
    rows = df.sample(n=min(count, len(df)), random_state=seed)
    path = path or os.path.splitext(profiler.table.path)[0] + '.repeat.csv'
    done = set(pd.read_csv(path)['arch_id']) if os.path.exists(path) else set()
    rows = rows[~rows['arch_id'].isin(done)]
    jobs = [(profiler.target, profiler.setting,
             search_space.make_genotype(json.loads(r.normal), json.loads(r.reduce))) for r in rows.itertuples()]
    ctx = multiprocessing.get_context('spawn')
    with ctx.Pool(profiler.workers, initializer=_worker_init, initargs=(profiler.worker_cpus,)) as pool:
        for start in range(0, len(jobs), profiler.batch):
            chunk = jobs[start:start + profiler.batch]
            for job, r, (artifact, _, _) in zip(chunk, rows.iloc[start:].itertuples(),
                                                pool.map(_prepare, chunk)):
                stats, reference, _ = profiler.time(artifact)
                append_row(path, REPEAT_COLUMNS,
                           {'arch_id': r.arch_id, 'first_ms': r.latency_ms, 'second_ms': round(stats.latency_ms, 5),
                            'first_ref_ms': r.ref_ms, 'second_ref_ms': round(reference.latency_ms, 5),
                            'measured_at': _now()})
    return repeatability_summary(pd.read_csv(path))


REPEAT_COLUMNS = ('arch_id', 'first_ms', 'second_ms', 'first_ref_ms', 'second_ref_ms', 'measured_at')


def repeatability_summary(pairs):
    """Relative differences between two measurements of the same architectures, raw and
    reference-normalised (latency / ref_ms)."""
    raw = (pairs['second_ms'] - pairs['first_ms']).abs() / pairs['first_ms']
    first = pairs['first_ms'] / pairs['first_ref_ms']
    normalised = ((pairs['second_ms'] / pairs['second_ref_ms']) - first).abs() / first
    out = {'pairs': int(len(pairs))}
    for name, rel in (('raw', raw), ('normalised', normalised)):
        out.update({f'{name}_mean_rel_diff': float(rel.mean()), f'{name}_median_rel_diff': float(rel.median()),
                    f'{name}_p90_rel_diff': float(rel.quantile(0.9))})
    return out
