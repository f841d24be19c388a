"""A profiling fleet: several devices of one kind and one model time one stream of architectures into
one table (`--device=a,b,c` over ssh, `--adb_serial=s1,s2`).

One thread per device pulls prepared architectures from a shared queue (`Dispatch`); the profiler's own
thread is the table's one writer, so rows never interleave. Each row records the device that timed it
(`device`: its ssh host or adb serial). A device that fails (its connection lost after its retries)
leaves the fleet: the architecture it held goes back to the queue for another device, so no row is lost
and none is written twice; the run fails only when no device is left.
"""
import logging
import queue
import threading

from ladnas_tf.profiling.targets import registry
from ladnas_tf.profiling.targets.base import TargetError, TransportError

# What must agree across a fleet's devices: its rows are one device model's, timed one way.
SAME = ('target', 'device', 'threads', 'xnnpack', 'delegate', 'numeric_format', 'tflite_source')
# The option of a kind that names one device: a fleet lists several, comma-separated.
ADDRESS = {'ssh': 'device', 'adb': 'serial'}


def address(description):
    """The unit a row was timed on: its ssh host or adb serial ('' for this machine or adb's only device)."""
    return description.get('host') or description.get('serial') or ''


def addresses(kind, value):
    """The comma-separated device list of a kind's address option, checked: [value] when it is one."""
    if kind not in ADDRESS or not value or ',' not in value:
        return [value]
    listed = [a.strip() for a in value.split(',')]
    if '' in listed:
        raise TargetError(f'device list {value!r} has an empty entry')
    twice = sorted({a for a in listed if listed.count(a) > 1})
    if twice:
        raise TargetError(f'device list {value!r} names {", ".join(twice)} twice')
    return listed


def make_targets(kind, threads=1, **options):
    """One target of `kind` per device listed in its address option (ssh: device, adb: serial)."""
    key = ADDRESS.get(kind)
    return [registry.make_target(kind, threads, **({**options, key: a} if key else options))
            for a in addresses(kind, options.get(key))]


class Fleet:
    """Several targets of one kind and device model, profiled as one (the profiler's `target`)."""

    def __init__(self, targets):
        self.targets = list(targets)
        if not self.targets:
            raise TargetError('a fleet needs at least one device')

    @property
    def overlaps_conversion(self):
        return all(getattr(t, 'overlaps_conversion', False) for t in self.targets)

    def check_available(self):
        for target in self.targets:
            target.check_available()

    def describe(self):
        """The first device's description, refused unless every device agrees on SAME; a fleet of
        several adds `fleet`: the devices' addresses."""
        described = [t.describe() for t in self.targets]
        first = described[0]
        for other in described[1:]:
            for k in SAME:
                if other.get(k) != first.get(k):
                    raise TargetError(f'fleet devices differ: {address(other)} has {k}={other.get(k)!r}, '
                                      f'{address(first)} has {k}={first.get(k)!r}; a fleet is one device model')
        return first if len(described) == 1 else {**first, 'fleet': [address(d) for d in described]}

    def device_files(self):
        """(files, bytes) the devices keep, summed over those that still answer (one that left the fleet
        cannot say), or None when no device keeps any."""
        kept = []
        for target in self.targets:
            try:
                kept.append(target.device_files())
            except (TargetError, TransportError):
                continue
        kept = [k for k in kept if k is not None]
        return (sum(k[0] for k in kept), sum(k[1] for k in kept)) if kept else None

    def close(self):
        for target in self.targets:
            target.close()


class Dispatch:
    """One thread per target, each timing what `submit` queues with `time(target, artifact)`;
    `finished` yields the results to the one writer (the caller's thread). A target that raises leaves:
    what it held is queued again for the others; with none left, its error is raised."""

    def __init__(self, targets, time):
        self.names = {id(t): address(t.describe()) for t in targets}  # before any device can leave
        self.work, self.results = queue.Queue(), queue.Queue()
        self.alive, self.in_flight = len(targets), 0
        self.threads = [threading.Thread(target=self._serve, args=(t, time), daemon=True) for t in targets]
        for thread in self.threads:
            thread.start()

    def _serve(self, target, time):
        while (item := self.work.get()) is not None:
            try:
                outcome = time(target, item[0])
            except Exception as e:  # noqa: BLE001 -- whatever broke this device, the others go on
                self.results.put((item, target, e))
                return
            self.results.put((item, target, outcome))

    def submit(self, artifact, job):
        """Queues one architecture's file; `job` comes back with its timing."""
        self.work.put((artifact, job))
        self.in_flight += 1

    def finished(self, keep_busy=False):
        """(job, device address, Stats, reference Stats, attempts) as devices finish, until none is in flight, or
        with keep_busy until no more than one per device is (so the caller can queue more meanwhile)."""
        while self.in_flight > (self.alive if keep_busy else 0):
            item, target, outcome = self.results.get()
            if isinstance(outcome, Exception):
                self._leave(target, outcome)
                self.work.put(item)  # its architecture, to another device
                continue
            self.in_flight -= 1
            yield (item[1], self.names[id(target)], *outcome)

    def _leave(self, target, error):
        self.alive -= 1
        if self.alive == 0:
            raise error
        logging.warning('%s left the fleet (%s); %d device(s) take its share',
                        self.names[id(target)] or target.name, str(error).splitlines()[0], self.alive)

    def close(self):
        for _ in self.threads:
            self.work.put(None)
