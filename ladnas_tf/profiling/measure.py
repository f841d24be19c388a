"""The timing harness every target shares: warm-up, timed runs of the inference alone, statistics."""
import dataclasses
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class Stats:
    """Latency statistics of one measurement, in milliseconds. The label is the median."""
    latency_ms: float
    mean_ms: float
    std_ms: float
    iqr_ms: float
    cv: float       # std / mean: how noisy this measurement was
    runs: int

    @classmethod
    def of(cls, seconds):
        ms = np.asarray(seconds, np.float64) * 1e3
        q1, median, q3 = np.percentile(ms, [25, 50, 75])
        mean, std = ms.mean(), ms.std(ddof=1) if len(ms) > 1 else 0.0
        return cls(float(median), float(mean), float(std), float(q3 - q1), float(std / mean), len(ms))


def time_runs(run_once, warmup, runs, clock=time.perf_counter):
    """Seconds of each of `runs` calls of run_once after `warmup` untimed ones."""
    for _ in range(warmup):
        run_once()
    seconds = []
    for _ in range(runs):
        start = clock()
        run_once()
        seconds.append(clock() - start)
    return seconds


def check_protocol(warmup, runs, max_attempts):
    if warmup < 0 or runs < 2 or max_attempts < 1:
        raise ValueError(f'need warmup >= 0, runs >= 2 and max_attempts >= 1 '
                         f'(got warmup={warmup}, runs={runs}, max_attempts={max_attempts})')


def measure(run_once, warmup=5, runs=20, max_cv=0.05, max_attempts=3, clock=time.perf_counter):
    """(Stats, attempts): re-measures while the CV exceeds max_cv, keeping the least noisy attempt.
    clock: seconds as a float (a fake one in tests)."""
    check_protocol(warmup, runs, max_attempts)
    best = None
    for attempt in range(1, max_attempts + 1):
        stats = Stats.of(time_runs(run_once, warmup, runs, clock))
        if best is None or stats.cv < best.cv:
            best = stats
        if stats.cv <= max_cv:
            break
    return best, attempt


def measure_with_reference(run_once, reference, warmup=5, runs=20, max_cv=0.05, max_attempts=3,
                           reference_runs=5, clock=time.perf_counter):
    """(Stats, reference Stats, attempts): `run_once` measured as by `measure`, each attempt bracketed
    by timed runs of a fixed reference network just before and just after it.

    On a shared machine (a busy sibling core, another tenant) every network slows by a similar factor
    for a while; the reference sees the same slowdown as the architecture it brackets, so the ratio
    latency / reference cancels most of it. Warm-up runs after the first bracket re-fill the caches."""
    check_protocol(warmup, runs, max_attempts)
    if reference_runs < 1:
        raise ValueError(f'need reference_runs >= 1 (got {reference_runs})')
    best = None
    for attempt in range(1, max_attempts + 1):
        before = time_runs(reference, 1, reference_runs, clock)
        stats = Stats.of(time_runs(run_once, warmup, runs, clock))
        after = time_runs(reference, 0, reference_runs, clock)
        if best is None or stats.cv < best[0].cv:
            best = stats, Stats.of(before + after)
        if stats.cv <= max_cv:
            break
    return best[0], best[1], attempt
