"""Targets timed on this machine (cpu_tflite: float32 TFLite; cpu_tflite_int8: full-integer TFLite;
gpu: TensorFlow on a GPU). Each also gives a `runner` (artifact -> a zero-argument callable running one
inference), so the same network can be timed outside a table (a sweep's re-timing, a QAT file)."""
import importlib.metadata as md

from ladnas_tf.profiling import agent, measure
from ladnas_tf.profiling.targets.base import FileTarget, Target, TargetError


def _versions():
    out = {}
    for package in ('tensorflow-cpu', 'tensorflow', 'ai-edge-litert'):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return out


class LocalTarget(Target):
    """A target timed in this process: the reference network's runner is kept between rows."""
    _reference = (None, None)

    def measure(self, artifact, reference, **protocol):
        """(Stats, reference Stats, attempts): measure.measure_with_reference on this machine."""
        if self._reference[0] is not reference:
            self._reference = (reference, self.runner(reference))
        return measure.measure_with_reference(self.runner(artifact), self._reference[1], **protocol)

    def __getstate__(self):  # conversion workers need no interpreter
        return {**self.__dict__, '_reference': (None, None)}


class CpuTFLite(FileTarget, LocalTarget):
    """The network converted to TFLite, run by the ai_edge_litert interpreter with explicit threads;
    XNNPACK on (the interpreter's default delegate) unless xnnpack=False. The file is written directly
    unless tflite_source='converter'."""
    name = 'cpu_tflite'

    def __init__(self, threads=1, xnnpack=True, tflite_source='writer'):
        self.threads, self.xnnpack, self.tflite_source = threads, xnnpack, tflite_source

    def runner(self, artifact):
        return agent.make_runner(artifact, self.threads, self.xnnpack)

    def describe(self):
        return {'target': self.name, 'device': agent.cpu_model(), 'threads': self.threads,
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


class Gpu(DeviceTF):
    """The `gpu` kind: DeviceTF on the first GPU (one stream: no thread count)."""

    def __init__(self, threads=1):
        super().__init__('/GPU:0', 'gpu')
