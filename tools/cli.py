"""What every tool shares: bad input ends in one line on stderr and a non-zero exit, no traceback.

Bad input is: a flag absl cannot parse, a float flag that is NaN or infinite, an input error of the
library (bad_input.BadInput: GenotypeError, TableError, LPMError, ...), an OSError at the file system
(a path that is a directory, under a file, not writable, missing), and TensorFlow's errors about a file
it cannot read or decode. Anything else, a plain ValueError included, is a bug and keeps its traceback.
"""
import dataclasses
import math
import sys
import types
import typing

from absl import app, flags

from ladnas_tf.bad_input import BadInput

FLAGS = flags.FLAGS


def fail(message):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(1)


def _check_floats():
    """Every float flag given on the command line must be a finite number: NaN passes absl's bounds."""
    for name in FLAGS:
        flag = FLAGS[name]
        if flag.present and isinstance(flag.value, float) and not math.isfinite(flag.value):
            fail(f'--{name}={flag.value}: must be a finite number')


def parse_flags(argv):
    """absl's parsing, with its two-line error (message + usage hint) as one line."""
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        fail(str(e).splitlines()[0])
    _check_floats()
    return rest


def os_error_text(e):
    """'<path>: <what is wrong>' for an OSError, with the paths it names."""
    paths = ' -> '.join(str(p) for p in (e.filename, e.filename2) if p is not None)
    what = e.strerror or str(e)
    return f'{paths}: {what}' if paths else what


def _tf_input_errors():
    tf_errors = sys.modules.get('tensorflow.python.framework.errors_impl')
    return (tf_errors.NotFoundError, tf_errors.InvalidArgumentError) if tf_errors else ()


def run(main):
    """app.run(main), turning bad input into one line."""
    def guarded(argv):
        try:
            return main(argv)
        except BadInput as e:
            fail(str(e).splitlines()[0] if str(e) else e.__class__.__name__)
        except OSError as e:
            fail(os_error_text(e))
        except _tf_input_errors() as e:  # e.g. a corrupt image met by the input pipeline
            fail(f'TensorFlow could not read its input: {e.message.splitlines()[0]}')
    app.run(guarded, flags_parser=parse_flags)


# ---- flags from a dataclass: the library's config classes carry the defaults and the help ----

def _flag_fields(config_class, prefix):
    """(flag name, field path, field, type) of every leaf field; a nested dataclass field is flattened
    with its metadata's 'prefix' (default: its name and '_')."""
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        kind = _unwrap_optional(hints[field.name])
        if dataclasses.is_dataclass(kind):
            inner = prefix + field.metadata.get('prefix', field.name + '_')
            for name, path, leaf, leaf_kind in _flag_fields(kind, inner):
                yield name, (field.name,) + path, leaf, leaf_kind
        else:
            yield prefix + field.name, (field.name,), field, kind


def _unwrap_optional(kind):
    """int for Optional[int] (int | None); anything else unchanged."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return kind


def _default(field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _define(name, field, kind, flag_values):
    default, help_text = _default(field), field.metadata.get('help', field.name)
    if 'choices' in field.metadata:
        choices = [c for c in field.metadata['choices'] if c is not None]
        flags.DEFINE_enum(name, default, choices, help_text, flag_values=flag_values)
    elif kind is bool:
        flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
    elif kind is int:
        flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
    elif kind is float:
        flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
    elif kind is str:
        flags.DEFINE_string(name, default, help_text, flag_values=flag_values)
    else:
        raise TypeError(f'{name}: no flag type for {kind!r}')


def define_flags(config_class, prefix='', skip=(), flag_values=FLAGS):
    """Defines an absl flag per field of config_class (a dataclass), named prefix + field name; its type
    from the annotation (int, float, bool, str, Optional[...]; an enum when the field's metadata has
    'choices'), its default the field's, its help the metadata's 'help'. skip: flag names left out."""
    for name, _, field, kind in _flag_fields(config_class, prefix):
        if name not in skip:
            _define(name, field, kind, flag_values)


def flag_names(config_class, prefix='', skip=()):
    """{flag name: field path} of define_flags(config_class, prefix, skip)."""
    return {name: path for name, path, _, _ in _flag_fields(config_class, prefix) if name not in skip}


def config_from_flags(config_class, prefix='', skip=(), flag_values=FLAGS, **overrides):
    """config_class built from the flags define_flags made; skipped fields keep their defaults unless
    given in overrides (top-level fields by name)."""
    values = {}
    for name, path, _, _ in _flag_fields(config_class, prefix):
        if name not in skip:
            values[path] = flag_values[name].value
    return _build(config_class, values, (), overrides)


def _build(config_class, values, path, overrides):
    kwargs = {}
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        kind = _unwrap_optional(hints[field.name])
        here = path + (field.name,)
        if not path and field.name in overrides:
            kwargs[field.name] = overrides[field.name]
        elif dataclasses.is_dataclass(kind):
            kwargs[field.name] = _build(kind, values, here, {})
        elif here in values:
            kwargs[field.name] = values[here]
    return config_class(**kwargs)
