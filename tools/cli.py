"""What every tool shares: bad input ends in one line on stderr and a non-zero exit, no traceback.

Bad input is: a flag absl cannot parse, a float flag that is NaN or infinite, an input error of the
library (bad_input.BadInput: GenotypeError, TableError, LPMError, ...), an OSError at the file system
(a path that is a directory, under a file, not writable, missing), and TensorFlow's errors about a file
it cannot read or decode. Anything else, a plain ValueError included, is a bug and keeps its traceback.
"""
import math
import sys

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
