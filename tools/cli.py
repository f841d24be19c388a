"""What every tool shares: bad input ends in one line on stderr and a non-zero exit, no traceback.

Bad input is: a flag absl cannot parse, a float flag that is NaN or infinite, an input error of the
library (bad_input.BadInput: GenotypeError, TableError, LPMError, ...), an OSError at the file system
(a path that is a directory, under a file, not writable, missing), and TensorFlow's errors about a file
it cannot read or decode. Anything else, a plain ValueError included, is a bug and keeps its traceback.
"""
import dataclasses
import logging
import math
import os
import sys
import types
import typing

from absl import app, flags

from ladnas_tf.bad_input import BadInput

FLAGS = flags.FLAGS


class _ProjectInfoOnly(logging.Filter):
    """TensorFlow logs some of its own INFO lines through absl, the logger the tools speak through (every
    checkpoint: 'Sharding callback duration: N microseconds'): a tool's screen keeps its own INFO lines
    and everyone's warnings."""
    _TENSORFLOW = f'{os.sep}tensorflow{os.sep}'

    def filter(self, record):
        return record.levelno >= logging.WARNING or self._TENSORFLOW not in record.pathname


logging.getLogger('absl').addFilter(_ProjectInfoOnly())


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


def _tf_unavailable():
    tf_errors = sys.modules.get('tensorflow.python.framework.errors_impl')
    return tf_errors.UnavailableError if tf_errors else ()


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
        except _tf_unavailable() as e:  # --strategy=multi_worker: a collective whose peer is gone
            fail(f'a worker of the cluster is unreachable ({e.message.splitlines()[0][:200]}); start every worker '
                 'again with the same command: the run resumes from its last checkpoint')
    app.run(guarded, flags_parser=parse_flags)


# ---- flags from a dataclass: the library's config classes carry the defaults and the help ----

class _Flag(typing.NamedTuple):
    name: str
    path: tuple          # field names from the config class down to the leaf
    field: dataclasses.Field
    kind: type
    default: object


def _flags_of(config_class, prefix='', defaults=None):
    """A _Flag per leaf field. A nested dataclass field is flattened, its flags named with its metadata's
    'prefix' (default: its name and '_') and defaulting to the nested default instance's values."""
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        kind = _unwrap_optional(hints[field.name])
        default = _default(field) if defaults is None else getattr(defaults, field.name)
        if dataclasses.is_dataclass(kind):
            inner = prefix + field.metadata.get('prefix', field.name + '_')
            for flag in _flags_of(kind, inner, default):
                yield flag._replace(path=(field.name,) + flag.path)
        else:
            yield _Flag(prefix + field.metadata.get('flag', field.name), (field.name,), field, kind, default)


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


def _none_spelled(field):
    """Choices that include None are spelled 'none' on the command line."""
    return None in field.metadata.get('choices', ())


def _define(flag, flag_values):
    field, help_text = flag.field, flag.field.metadata.get('help', flag.field.name)
    args = (flag.name, flag.default, help_text)
    if 'choices' in field.metadata:
        choices = ['none' if c is None else c for c in field.metadata['choices']]
        default = 'none' if flag.default is None and _none_spelled(field) else flag.default
        flags.DEFINE_enum(flag.name, default, choices, help_text, flag_values=flag_values)
    elif flag.kind is bool:
        flags.DEFINE_bool(*args, flag_values=flag_values)
    elif flag.kind is int:
        flags.DEFINE_integer(*args, flag_values=flag_values)
    elif flag.kind is float:
        flags.DEFINE_float(*args, flag_values=flag_values)
    elif flag.kind is str:
        flags.DEFINE_string(*args, flag_values=flag_values)
    else:
        raise TypeError(f'{flag.name}: no flag type for {flag.kind!r}')


def define_flags(config_class, prefix='', skip=(), flag_values=FLAGS):
    """Defines an absl flag per field of config_class (a dataclass): named prefix + the field's name (or
    its metadata's 'flag'); typed by the annotation (int, float, bool, str, Optional[...]; an enum when
    the metadata has 'choices'); defaulting to the field's default; helped by the metadata's 'help'.
    skip: flag names left out."""
    for flag in _flags_of(config_class, prefix):
        if flag.name not in skip:
            _define(flag, flag_values)


def flag_fields(config_class, prefix='', skip=()):
    """{flag name: field path} of define_flags(config_class, prefix, skip)."""
    return {flag.name: flag.path for flag in _flags_of(config_class, prefix) if flag.name not in skip}


def config_from_flags(config_class, prefix='', skip=(), flag_values=FLAGS, **overrides):
    """config_class built from the flags define_flags made. Skipped flags leave their fields at the
    default; overrides replace top-level fields (values the tool derives, e.g. a resolved path)."""
    values = {}
    for flag in _flags_of(config_class, prefix):
        if flag.name not in skip:
            value = flag_values[flag.name].value
            values[flag.path] = None if value == 'none' and _none_spelled(flag.field) else value
    return _build(config_class, values, (), overrides)


def _build(config_class, values, path, overrides, base=None):
    """config_class from the flag values under path; fields without one keep base's (the nested default
    instance) or the class's default."""
    hints, kwargs = typing.get_type_hints(config_class), {}
    for field in dataclasses.fields(config_class):
        here, kind = path + (field.name,), _unwrap_optional(hints[field.name])
        if field.name in overrides:
            kwargs[field.name] = overrides[field.name]
        elif dataclasses.is_dataclass(kind):
            inner = _default(field) if base is None else getattr(base, field.name)
            kwargs[field.name] = _build(kind, values, here, {}, inner)
        elif here in values:
            kwargs[field.name] = values[here]
    return config_class(**kwargs) if base is None else dataclasses.replace(base, **kwargs)


# ---- flags from the target kinds' options: each default is defined once, on its kind ----

def define_option_flags(options, flag_values=FLAGS):
    """An absl flag per profiling.targets.base.Option."""
    for o in options:
        define = getattr(flags, f'DEFINE_{o.kind}')
        default = list(o.default) if o.kind == 'list' else o.default
        bounds = {} if o.lower_bound is None else {'lower_bound': o.lower_bound}
        if o.kind == 'enum':
            define(o.flag, default, list(o.choices), o.help, flag_values=flag_values)
        else:
            define(o.flag, default, o.help, flag_values=flag_values, **bounds)


def option_values(options, flag_values=FLAGS):
    """{keyword: flag value} of the options (a target kind's constructor keywords)."""
    return {o.keyword: flag_values[o.flag].value for o in options}
