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


def read(file=None):
    """[(entry number, entry)] of the devices file, [] without one; a file that is not a devices file is
    refused in one line naming it. The entries are the kinds' to check (registry.user_devices)."""
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
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise DeviceError(f'{file}: device {number} is not a JSON object')
    return list(enumerate(entries, 1))


def save(devices, file=None):
    """Writes the Devices, whole or not at all (a temporary file moved onto the name)."""
    file = file or path()
    os.makedirs(os.path.dirname(file) or '.', exist_ok=True)
    temp = file + '.partial'
    with open(temp, 'w') as f:
        json.dump({'devices': [d.to_json() for d in devices]}, f, indent=2)
        f.write('\n')
    os.replace(temp, file)
