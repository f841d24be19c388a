"""Name the remote devices (ssh hosts, adb phones) that tools may time on from this machine.

  ladnas devices add pi@board:2222 --device_python=/usr/bin/python3 --ssh_key=~/.ssh/pi
  ladnas devices add --target=adb R58M123
  ladnas devices list
  ladnas devices remove pi@board:2222

A table or predictor names the device it was measured on; the search and the pipeline time there only
when that device is named here (or by the tool's own flags), with the settings given here: a file never
supplies the host, Python or folder. The list is $LADNAS_HOME/devices.json (default ~/.ladnas_tf).
"""
from absl import flags

from ladnas_tf.bad_input import BadInput
from ladnas_tf.profiling.targets import devices, registry
from . import cli

FLAGS = flags.FLAGS
flags.DEFINE_enum('target', 'ssh', list(devices.KINDS), 'The kind of device to add or remove.')


def _settings():
    """The connection settings each remote kind takes, less the device's own name (a positional)."""
    seen = {}
    for kind in devices.KINDS:
        cls = registry.target_class(kind)
        for option in cls.OPTIONS:
            if option.keyword in cls.CONNECTION and option.keyword != devices.IDENTITY[kind]:
                seen.setdefault(option.flag, option)
    return list(seen.values())


cli.define_option_flags(_settings())


def given_settings(kind):
    """{keyword: value} of the flags given on the command line that `kind` takes; refuses the others."""
    cls = registry.target_class(kind)
    own = {o.flag: o.keyword for o in cls.OPTIONS if o.keyword in cls.CONNECTION}
    out = {}
    for option in _settings():
        if FLAGS[option.flag].present:
            if option.flag not in own:
                raise BadInput(f'--{option.flag} is not a setting of an {kind} device')
            out[own[option.flag]] = FLAGS[option.flag].value
    return out


def describe(device):
    settings = ' '.join(f'{k}={v}' for k, v in device.options.items()
                        if k != devices.IDENTITY[device.kind] and v is not None)
    return f'{device.kind}  {device.name or "(the only adb device)"}  {settings}'.rstrip()


def main(argv):
    action, names = (argv[1], argv[2:]) if len(argv) > 1 else (None, [])
    if action == 'list' and not names:
        known = registry.user_devices()
        print('\n'.join(describe(d) for d in known) if known else f'no devices named ({devices.path()})')
    elif action == 'add' and len(names) <= 1 and (names or FLAGS.target == 'adb'):
        name = names[0] if names else None
        new = registry.device(FLAGS.target, **{devices.IDENTITY[FLAGS.target]: name}, **given_settings(FLAGS.target))
        replaced = registry.add_device(new)
        print(f'{"updated" if replaced else "added"} {describe(new)}')
    elif action == 'remove' and len(names) <= 1 and (names or FLAGS.target == 'adb'):
        registry.remove_device(FLAGS.target, names[0] if names else '')
        print(f'removed {FLAGS.target} {names[0] if names else "(the only adb device)"}')
    else:
        raise BadInput('usage: devices add NAME [settings] | list | remove NAME (--target=adb for a phone)')


if __name__ == '__main__':
    cli.run(main)
