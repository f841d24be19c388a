"""The user's devices: the only remote devices (ssh hosts, adb phones) a tool may reach.

A table's or a predictor's metadata names the device it was measured on, and a tool that times there
(the search's summary, the pipeline's report) does so only when the user named that device on this
machine: by the running tool's own flags, or here, in `$LADNAS_HOME/devices.json` (default
~/.ladnas_tf/devices.json; `ladnas devices add|list|remove`). Metadata only selects among these; the
host, Python, folder and keys used are always the user's, never a file's.

    {"devices": [{"target": "ssh", "device": "pi@board:2222", "python": "/usr/bin/python3"},
                 {"target": "adb", "serial": "R58M123"}]}

Each entry holds a kind's CONNECTION keywords (its OPTIONS' keywords, e.g. `python` for
--device_python); what is not given takes the kind's default.
"""
import dataclasses
import json
import os

from ladnas_tf.profiling.targets.base import TargetError

HOME_ENV = 'LADNAS_HOME'
FILE = 'devices.json'
KINDS = ('ssh', 'adb')  # the kinds that reach another machine
IDENTITY = {'ssh': 'device', 'adb': 'serial'}  # the keyword naming the device itself


class DeviceError(TargetError):
    """A devices file that cannot be used, or a device that is not in it."""


@dataclasses.dataclass(frozen=True)
class Device:
    """A device the user named: its kind and its CONNECTION keywords."""
    kind: str
    options: dict

    @property
    def name(self):
        """'pi@board:2222', 'R58M123', or '' for "the only adb device"."""
        return self.options.get(IDENTITY[self.kind]) or ''

    def to_json(self):
        return {'target': self.kind, **{k: v for k, v in self.options.items() if v is not None}}


def path():
    """The user's devices file."""
    home = os.environ.get(HOME_ENV) or os.path.join(os.path.expanduser('~'), '.ladnas_tf')
    return os.path.join(home, FILE)


def device(kind, **options):
    """A Device of `kind` from CONNECTION keywords, checked by building its target (nothing connects)."""
    from ladnas_tf.profiling.targets import registry
    if kind not in KINDS:
        raise DeviceError(f'{kind!r} is not a remote target (known: {", ".join(KINDS)})')
    cls = registry.target_class(kind)
    unknown = sorted(set(options) - set(cls.CONNECTION))
    if unknown:
        raise DeviceError(f'a {kind} device takes no {", ".join(map(repr, unknown))} (known: '
                          f'{", ".join(cls.CONNECTION)})')
    cls(**{k: v for k, v in options.items() if v is not None})  # refuses a bad host, serial, path, ...
    return Device(kind, dict(options))


def load(file=None):
    """The registered Devices ([] without a file); a broken file is refused in one line naming it."""
    file = file or path()
    try:
        with open(file) as f:
            entries = json.load(f).get('devices', [])
    except FileNotFoundError:
        return []
    except (OSError, ValueError, AttributeError) as e:
        raise DeviceError(f'{file}: not a devices file ({str(e).splitlines()[0] if str(e) else e})') from None
    if not isinstance(entries, list):
        raise DeviceError(f'{file}: "devices" is not a list')
    return [_entry(file, i, entry) for i, entry in enumerate(entries)]


def _entry(file, index, entry):
    if not isinstance(entry, dict):
        raise DeviceError(f'{file}: device {index + 1} is not a JSON object')
    options = dict(entry)
    try:
        return device(options.pop('target', None), **options)
    except TargetError as e:
        raise DeviceError(f'{file}: device {index + 1}: {e}') from None


def save(devices, file=None):
    """Writes the Devices, whole or not at all (a temporary file moved onto the name)."""
    file = file or path()
    os.makedirs(os.path.dirname(file) or '.', exist_ok=True)
    temp = file + '.partial'
    with open(temp, 'w') as f:
        json.dump({'devices': [d.to_json() for d in devices]}, f, indent=2)
        f.write('\n')
    os.replace(temp, file)


def same(kind, a, b):
    """Whether two names of a `kind` device are the same device (ssh: the same destination and port)."""
    if kind == 'ssh':
        from ladnas_tf.profiling.targets.ssh import parse_device
        return parse_device(a) == parse_device(b)
    return a == b


def find(kind, name, devices):
    """The first of `devices` that is the `kind` device called `name`, or None."""
    return next((d for d in devices if d.kind == kind and same(kind, d.name, name)), None)


def add(new, file=None):
    """Registers a Device, replacing the entry of the same device; returns whether one was replaced."""
    known = load(file)
    kept = [d for d in known if not (d.kind == new.kind and same(new.kind, d.name, new.name))]
    save(kept + [new], file)
    return len(kept) < len(known)


def remove(kind, name, file=None):
    """Forgets a device; refuses (nothing written) one that is not registered."""
    known = load(file)
    if find(kind, name, known) is None:
        raise DeviceError(f'no {kind} device {name!r} is registered ({file or path()})')
    save([d for d in known if not (d.kind == kind and same(kind, d.name, name))], file)
