"""The target kinds by name: what `--target` takes, what a table's metadata names, what a predictor was
measured on.

A kind is found by its module path and imported when first asked for, as nn-Meter's backends are: the
search reaches the local kinds and a recorded remote one through this registry without depending on the
ssh or adb code (BUILD: `profiling` against `profiling_remote`). A new kind is a module with a
base.Target subclass and one line here; its settings (and the tools' flags for them) are its OPTIONS.
"""
import importlib

from ladnas_tf.profiling.targets.base import TargetError

KINDS = {
    'cpu_tflite': 'ladnas_tf.profiling.targets.local:CpuTFLite',
    'cpu_tflite_int8': 'ladnas_tf.profiling.targets.local:CpuTFLiteInt8',
    'gpu': 'ladnas_tf.profiling.targets.local:Gpu',
    'ssh': 'ladnas_tf.profiling.targets.ssh:SshTarget',    # a board or server over ssh
    'adb': 'ladnas_tf.profiling.targets.adb:AdbTarget',    # an Android device through adb and benchmark_model
}
# Kinds that run a .tflite file as it is (a pipeline's exported files can be timed on them).
FILE_KINDS = ('cpu_tflite', 'cpu_tflite_int8', 'ssh', 'adb')


def target_class(name):
    """The base.Target subclass of kind `name`."""
    if name not in KINDS:
        raise TargetError(f'unknown target {name!r} (known: {", ".join(KINDS)})')
    module, _, attribute = KINDS[name].partition(':')
    return getattr(importlib.import_module(module), attribute)


def options():
    """Every kind's OPTIONS, each flag once (kinds share the retry policy's): the tools' flags."""
    seen = {}
    for name in KINDS:
        for option in target_class(name).OPTIONS:
            seen.setdefault(option.flag, option)
    return list(seen.values())


def make_target(name, threads=1, **options):
    """The target `name`; `options` are its OPTIONS' keywords (device, key_file, serial, ...)."""
    return target_class(name)(threads=threads, **options)


def target_of(description):
    """The target a table (or an LPM trained on it) was measured on, from its description: a remote one
    is reached again at the recorded host / serial with the user's ssh or adb defaults."""
    return target_class(description.get('target')).from_description(description)


def reachable(description):
    """(the target of `description` ready to time, None), or (None, why this machine cannot time on it):
    a predictor made on an ssh board or a phone names a device this machine may not reach."""
    try:
        target = target_of(description)
        target.check_available()
    except TargetError as e:
        return None, str(e)
    return target, None
