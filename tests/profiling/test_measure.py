"""The timing harness: statistics, the re-measure rule, input checks."""
import dataclasses
import itertools
import math

import numpy as np
import pytest

from ladnas_tf.profiling import measure


def test_stats_against_hand_computed_values():
    s = measure.Stats.of([0.001, 0.002, 0.003, 0.004])  # seconds
    assert s.latency_ms == pytest.approx(2.5)
    assert s.mean_ms == pytest.approx(2.5)
    assert s.std_ms == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s.iqr_ms == pytest.approx(3.25 - 1.75)
    assert s.cv == pytest.approx(s.std_ms / 2.5)
    assert s.runs == 4


def test_time_runs_warms_up_then_times_only_the_call():
    calls = []
    ticks = itertools.count()
    seconds = measure.time_runs(lambda: calls.append(1), warmup=3, runs=5, clock=lambda: next(ticks))
    assert len(calls) == 8
    assert seconds == [1] * 5  # the fake clock ticks once per read: start and stop of each run


class _FakeClock:
    """Seconds that move only when a fake run says how long it took: timings are exact, no sleeps."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Noisy:
    """A run taking 2 and 12 ms in turn for the first `noisy_attempts` attempts, then a steady 2 ms."""

    def __init__(self, clock, noisy_attempts, runs):
        self.clock, self.calls, self.noisy_attempts, self.runs = clock, 0, noisy_attempts, runs

    def __call__(self):
        attempt = self.calls // self.runs
        self.calls += 1
        self.clock.now += 0.002 if attempt >= self.noisy_attempts or self.calls % 2 else 0.012


def _assert_stats(stats, latency_ms, mean_ms, std_ms, iqr_ms, runs):
    assert dataclasses.astuple(stats) == pytest.approx(
        (latency_ms, mean_ms, std_ms, iqr_ms, std_ms / mean_ms, runs), abs=1e-9)


def test_remeasures_while_noisy_and_keeps_the_steady_attempt():
    clock = _FakeClock()
    run = _Noisy(clock, noisy_attempts=1, runs=6)
    stats, attempts = measure.measure(run, warmup=0, runs=6, max_cv=0.3, max_attempts=3, clock=clock)
    assert attempts == 2 and run.calls == 12  # the noisy attempt (CV 0.78), then the steady one
    _assert_stats(stats, 2.0, 2.0, 0.0, 0.0, 6)


def test_gives_up_after_max_attempts_and_returns_the_least_noisy():
    clock = _FakeClock()
    run = _Noisy(clock, noisy_attempts=10, runs=4)
    stats, attempts = measure.measure(run, warmup=0, runs=4, max_cv=0.01, max_attempts=2, clock=clock)
    assert attempts == 2 and run.calls == 8
    # 2, 12, 2, 12 ms: median and mean 7, sample std sqrt(4 * 25 / 3), quartiles 2 and 12.
    _assert_stats(stats, 7.0, 7.0, math.sqrt(100 / 3), 10.0, 4)


def test_reference_timings_are_the_runs_around_the_architecture():
    clock = _FakeClock()

    def arch():
        clock.now += 0.004

    def reference():
        clock.now += 0.010 if clock.now < 0.025 else 0.014  # the machine slows down while timing

    stats, ref, attempts = measure.measure_with_reference(arch, reference, warmup=1, runs=3, max_attempts=1,
                                                          reference_runs=2, clock=clock)
    _assert_stats(stats, 4.0, 4.0, 0.0, 0.0, 3)
    # Timed before: two 10 ms runs (after an untimed warm-up); after: two 14 ms runs, the slowdown.
    _assert_stats(ref, 12.0, 12.0, math.sqrt(4 * 4 / 3), 4.0, 4)
    assert attempts == 1


@pytest.mark.parametrize('kwargs', [dict(runs=-1), dict(runs=1), dict(warmup=-2), dict(max_attempts=0)])
def test_bad_protocol_is_refused_in_one_line(kwargs):
    with pytest.raises(ValueError) as e:
        measure.measure(lambda: None, **kwargs)
    assert '\n' not in str(e.value)


def test_reference_brackets_every_attempt():
    log = []
    stats, ref, attempts = measure.measure_with_reference(
        lambda: log.append('a'), lambda: log.append('r'), warmup=2, runs=3, max_attempts=1, reference_runs=2)
    assert ''.join(log) == 'rrr' + 'aaaaa' + 'rr'  # 1 warm-up + 2 timed, the arch, 2 timed after
    assert stats.runs == 3 and ref.runs == 4 and attempts == 1


def test_repeatability_summary_normalises_by_the_reference():
    import pandas as pd
    from ladnas_tf.profiling import profiler
    pairs = pd.DataFrame({'first_ms': [10.0, 20.0], 'second_ms': [12.0, 24.0],
                          'first_ref_ms': [5.0, 5.0], 'second_ref_ms': [6.0, 6.0]})
    s = profiler.repeatability_summary(pairs)
    assert s['raw_mean_rel_diff'] == pytest.approx(0.2)
    assert s['normalised_mean_rel_diff'] == pytest.approx(0.0)  # both slowed by the same 20%
