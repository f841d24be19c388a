"""Targets: how a genotype becomes something to time on a device, and what that device is
(cpu_tflite: float32 TFLite; cpu_tflite_int8: full-integer TFLite; gpu: TensorFlow on a GPU).

A target splits into `prepare` (genotype -> picklable artifact; may run in a worker process, ahead of
timing) and `measure` (artifact and the reference network's artifact -> Stats of both, by measure.py's
protocol, the same for every target). Local targets also give a `runner` (artifact -> a zero-argument
callable running one inference); remote ones (remote.py: ssh, adb) time on the device.
"""
import dataclasses
import re

from ladnas_tf.bad_input import BadInput
from ladnas_tf.latency import measure
from ladnas_tf.latency.agent import cpu_model


class TargetError(BadInput):
    """An unknown target, or one this machine cannot run."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """The evaluation network being timed (the paper: CIFAR 20 cells C=36; ImageNet 14 cells C=48)."""
    setting: str = 'cifar'
    channels: int = 36
    num_cells: int = 20
    image_size: int = 32
    batch_size: int = 1
    num_classes: int = 10

    @property
    def key(self):
        return (f'{self.setting}-C{self.channels}-N{self.num_cells}-{self.image_size}px'
                f'-b{self.batch_size}-k{self.num_classes}')

    def network_kwargs(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_key(cls, key):
        """The inverse of `key` (an LPM's metadata names its setting by key)."""
        match = re.fullmatch(r'(\w+)-C(\d+)-N(\d+)-(\d+)px-b(\d+)-k(\d+)', str(key))
        if not match:
            raise TargetError(f'setting key {key!r} is not of the form cifar-C36-N20-32px-b1-k10')
        name, *numbers = match.groups()
        return cls(name, *(int(n) for n in numbers))


def _versions():
    import importlib.metadata as md
    return {p: md.version(p) for p in ('tensorflow-cpu', 'tensorflow', 'ai-edge-litert')
            if _installed(p)}


def _installed(package):
    import importlib.metadata as md
    try:
        md.version(package)
        return True
    except md.PackageNotFoundError:
        return False


# Where a file comes from: the writers make the converter's file without TensorFlow, in a small fraction
# of its time (graph.tflite_writer, docs/tflite_writer_equivalence.md; int8: graph.tflite_int8_writer,
# the converter's structure with uncalibrated values, docs/tflite_int8_writer_equivalence.md); the
# converter stays as the reference.
TFLITE_SOURCES = ('writer', 'converter')
# The file's numeric format: float32, or full-integer int8 (int8 weights and activations, float32 input
# and output). A table's description records it (numeric_format); tables of two formats never mix.
NUMERIC_FORMATS = ('float32', 'int8')


def float_tflite(genotype, setting, source, numeric_format='float32'):
    """(file, params, MACs per image) of the genotype in the setting, from `source`, float32 or int8."""
    if source not in TFLITE_SOURCES:
        raise TargetError(f'unknown TFLite source {source!r} (known: {", ".join(TFLITE_SOURCES)})')
    if numeric_format not in NUMERIC_FORMATS:
        raise TargetError(f'unknown numeric format {numeric_format!r} (known: {", ".join(NUMERIC_FORMATS)})')
    int8 = numeric_format == 'int8'
    if source == 'writer':
        from ladnas_tf.graph import tflite_int8_writer, tflite_writer
        write = tflite_int8_writer.timing_tflite_int8 if int8 else tflite_writer.timing_tflite
        return write(genotype, **setting.network_kwargs())
    from ladnas_tf.graph import constant  # imports TensorFlow: only where the converter runs
    convert = constant.genotype_to_tflite_int8 if int8 else constant.genotype_to_tflite
    return convert(genotype, **setting.network_kwargs())


def numeric_format(description):
    """A table's (or an LPM's target's) numeric format; descriptions from before it was recorded were
    int8 only for the cpu_tflite_int8 target."""
    return description.get('numeric_format') or ('int8' if description.get('target') == 'cpu_tflite_int8'
                                                 else 'float32')


class LocalTarget:
    """A target timed in this process: the reference network's runner is kept between rows."""
    _reference = (None, None)

    def check_available(self):
        pass

    def measure(self, artifact, reference, **protocol):
        """(Stats, reference Stats, attempts): measure.measure_with_reference on this machine."""
        if self._reference[0] is not reference:
            self._reference = (reference, self.runner(reference))
        return measure.measure_with_reference(self.runner(artifact), self._reference[1], **protocol)

    def __getstate__(self):  # conversion workers need no interpreter
        return {**self.__dict__, '_reference': (None, None)}


class CpuTFLite(LocalTarget):
    """The network converted to TFLite, run by the ai_edge_litert interpreter with explicit threads;
    XNNPACK on (the interpreter's default delegate) unless xnnpack=False. The file is written directly
    unless tflite_source='converter'."""
    name = 'cpu_tflite'
    numeric_format = 'float32'

    def __init__(self, threads=1, xnnpack=True, tflite_source='writer'):
        self.threads, self.xnnpack, self.tflite_source = threads, xnnpack, tflite_source

    def prepare(self, genotype, setting):
        return float_tflite(genotype, setting, self.tflite_source, self.numeric_format)

    def runner(self, artifact):
        from ladnas_tf.latency import agent
        return agent.make_runner(artifact, self.threads, self.xnnpack)

    def describe(self):
        return {'target': self.name, 'device': cpu_model(), 'threads': self.threads,
                'xnnpack': self.xnnpack, 'tflite_source': self.tflite_source,
                'numeric_format': self.numeric_format, 'versions': _versions()}


class CpuTFLiteInt8(CpuTFLite):
    """cpu_tflite on the network with full-integer post-training quantization (int8 weights and
    activations, float input and output, as a deployed int8 export). Not automatically faster: on
    x86 only part of an int8 graph may be delegated to XNNPACK. The file is written directly
    (graph.tflite_int8_writer) unless tflite_source='converter' (calibrated on random images)."""
    name = 'cpu_tflite_int8'
    numeric_format = 'int8'


class DeviceTF(LocalTarget):
    """The network under tf.function on a TensorFlow device, synchronised after every run so the
    clock sees the device's work, not the launch. `gpu` is this on '/GPU:0'; tests run it on '/CPU:0'."""

    def __init__(self, device='/GPU:0', name='gpu'):
        self.device, self.name = device, name

    def check_available(self):
        import tensorflow as tf
        kind = self.device.strip('/').split(':')[0].upper()
        if not tf.config.list_physical_devices(kind):
            raise TargetError(f"target '{self.name}' needs a {kind} device, and "
                              f"tf.config.list_physical_devices('{kind}') is empty on this machine")

    def prepare(self, genotype, setting):
        # The graph must be built in the timing process, on the device: here only params and MACs.
        from ladnas_tf.graph import constant
        _, params, macs = constant.concrete_function(genotype, **setting.network_kwargs())
        return (genotype, setting), params, macs

    def runner(self, artifact):
        import tensorflow as tf

        from ladnas_tf.graph import constant
        genotype, setting = artifact
        with tf.device(self.device):
            fn = constant.concrete_function(genotype, **setting.network_kwargs())[0]
            shape = (setting.batch_size, setting.image_size, setting.image_size, 3)
            x = tf.random.stateless_uniform(shape, (0, 0))

        def run_once():
            with tf.device(self.device):
                y = fn(x)
            y.numpy()  # blocks until the device has finished: the synchronisation point
        return run_once

    def describe(self):
        import tensorflow as tf
        kind = self.device.strip('/').split(':')[0].upper()
        devices = tf.config.list_physical_devices(kind)
        detail = tf.config.experimental.get_device_details(devices[0]) if devices else {}
        return {'target': self.name, 'device': detail.get('device_name', self.device),
                'threads': 0, 'xnnpack': False, 'versions': _versions()}


def _ssh(threads, device=None, **options):
    from ladnas_tf.latency import remote
    if not device:
        raise TargetError("target 'ssh' needs a device: user@host[:port] (--device)")
    return remote.SshTarget(device, threads, **options)


def _adb(threads, **options):
    from ladnas_tf.latency import remote
    return remote.AdbTarget(threads=threads, **options)


TARGETS = {
    'cpu_tflite': lambda threads: CpuTFLite(threads),
    'cpu_tflite_int8': lambda threads: CpuTFLiteInt8(threads),
    'gpu': lambda threads: DeviceTF('/GPU:0', 'gpu'),
    'ssh': _ssh,   # a board or server over ssh (remote.py)
    'adb': _adb,   # an Android device through adb and benchmark_model (remote.py)
}
REMOTE = ('ssh', 'adb')


def make_target(name, threads=1, **options):
    """The target `name`; `options` configure a remote one (device, key file, adb serial, ...)."""
    if name not in TARGETS:
        raise TargetError(f'unknown target {name!r} (known: {", ".join(TARGETS)})')
    if name not in REMOTE:
        return TARGETS[name](threads)
    return TARGETS[name](threads, **options)


def target_of(description):
    """The target a table (or an LPM trained on it) was measured on, from its description: a remote one
    is reached again at the recorded host / serial with the user's ssh or adb defaults."""
    name, threads = description.get('target'), description.get('threads', 1)
    if name == 'ssh':
        return make_target(name, threads, device=description.get('host'),
                           python=description.get('device_python', 'python3'),
                           folder=description.get('device_folder', '~/.cache/ladnas_tf_agent'),
                           numeric_format=numeric_format(description))
    if name == 'adb':
        return make_target(name, threads, serial=description.get('serial'),
                           delegate=description.get('delegate', 'xnnpack'), numeric_format=numeric_format(description))
    return make_target(name, threads)


def target_of_lpm(metadata):
    """target_of an LPM's metadata (older ones name the target only)."""
    return target_of(metadata.get('target_description') or {'target': metadata['target']})
