"""The target kinds by name: what `--target` takes, what a table's metadata names, what a predictor was
measured on.

A kind is found by its module path and imported when first asked for, as nn-Meter's backends are: the
search reaches the local kinds and a recorded remote one through this registry without depending on the
ssh or adb code (BUILD: `profiling` against `profiling_remote`). A new kind is a module with a
base.Target subclass and one line here; its settings (and the tools' flags for them) are its OPTIONS.
A remote kind is reached from a description only at a device the user named (devices.py).
"""
import importlib

from ladnas_tf.profiling.targets import devices
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
    if not isinstance(name, str) or name not in KINDS:
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


# ---- the user's devices (devices.py stores them): the only remote devices a description may select ----

def device(kind, **options):
    """A devices.Device of `kind` from its CONNECTION keywords (device / serial, python, folder, ...),
    checked by building its target (nothing connects): a bad host, serial or path is refused here."""
    if kind not in devices.KINDS:
        raise devices.DeviceError(f'{kind!r} is not a remote target (known: {", ".join(devices.KINDS)})')
    cls = target_class(kind)
    unknown = sorted(set(options) - set(cls.CONNECTION))
    if unknown:
        raise devices.DeviceError(f'a {kind} device takes no {", ".join(map(repr, unknown))} (known: '
                                  f'{", ".join(cls.CONNECTION)})')
    cls(**{k: v for k, v in options.items() if v is not None})
    return devices.Device(kind, dict(options))


def user_devices(file=None):
    """The devices the user registered, each checked; a bad entry is refused in one line naming it."""
    out = []
    for number, entry in devices.read(file):
        options = dict(entry)
        try:
            out.append(device(options.pop('target', None), **options))
        except TargetError as e:
            raise devices.DeviceError(f'{file or devices.path()}: device {number}: {e}') from None
    return out


def find_device(kind, name, known):
    """The first of `known` (Devices) that is the `kind` device called `name`, or None."""
    return next((d for d in known if d.kind == kind and target_class(kind).same_device(d.name, name)), None)


def add_device(new, file=None):
    """Registers a Device, replacing the entry of the same device; returns whether one was replaced."""
    known = user_devices(file)
    kept = [d for d in known if find_device(new.kind, new.name, [d]) is None]
    devices.save(kept + [new], file)
    return len(kept) < len(known)


def remove_device(kind, name, file=None):
    """Forgets a device; refuses (nothing written) one that is not registered."""
    known = user_devices(file)
    gone = find_device(kind, name, known)
    if gone is None:
        raise devices.DeviceError(f'no {kind} device {name!r} is registered ({file or devices.path()})')
    devices.save([d for d in known if d is not gone], file)


class NotNamedError(TargetError):
    """A description names a remote device the user did not name on this machine."""


_HOW_TO_NAME = {'ssh': lambda name: f'pass --device={name} or run `ladnas devices add {name}`',
                'adb': lambda name: (f'pass --adb_serial={name} or run `ladnas devices add --target=adb {name}`'
                                     if name else 'run `ladnas devices add --target=adb` (the only device attached)')}


def target_of(description, named=None, what='predictor'):
    """The target a table (or an LPM trained on it) was measured on, from its description. A remote one
    only at a device the user named on this machine: `named` (Devices from the running tool's flags, see
    device()) or a registered one (user_devices). The description only selects among them: the
    host, Python, folder and keys used are the user's. Nothing connects here."""
    kind = description.get('target') if isinstance(description, dict) else None
    cls = target_class(kind)
    recorded = cls.device_of(description)
    if recorded is None:
        return cls.from_description(description)
    chosen = find_device(kind, recorded, [*(named or ()), *user_devices()])
    if chosen is None:
        shown = f'{kind} host {recorded}' if kind == 'ssh' else f'adb device {recorded or "(the only one)"}'
        raise NotNamedError(f'{what} was measured on {shown}, which you have not named on this machine: '
                            f'{_HOW_TO_NAME[kind](recorded)} to time there')
    return cls.from_description(description, chosen.options)


def reachable(description, named=None, what='predictor'):
    """(the target of `description` ready to time, None), or (None, why this machine cannot time on it):
    a predictor made on an ssh board or a phone names a device this machine may not reach, or may not
    reach because the user did not name it here (target_of)."""
    try:
        target = target_of(description, named, what)
        target.check_available()
    except TargetError as e:
        return None, str(e)
    return target, None
