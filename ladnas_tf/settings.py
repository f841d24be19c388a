"""A field of a config dataclass with its help text: the library's configs carry their defaults and
their help; tools/cli.py makes the command-line flags from them (the library never parses flags)."""
import dataclasses


def option(default, help_text, **metadata):
    """A field with metadata 'help'; optional 'choices' (an enum flag) and 'flag' (the flag's name when
    it is not the field's)."""
    return dataclasses.field(default=default, metadata={'help': help_text, **metadata})


def nested(config_class, help_text, prefix, default=None):
    """A nested config field whose flags are named prefix + its fields' names; default: an instance
    (default: config_class())."""
    factory = config_class if default is None else (lambda: default)
    return dataclasses.field(default_factory=factory, metadata={'help': help_text, 'prefix': prefix})
