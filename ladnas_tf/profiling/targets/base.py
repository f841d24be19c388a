"""What every target is: `prepare` (genotype -> picklable artifact, params, MACs; may run in a worker
process, ahead of timing) and `measure` (artifact and the reference network's artifact -> Stats of both,
by measure.py's protocol, the same for every target), with `check_available` failing in seconds on a
device this machine cannot reach and `describe` naming the device for a table's metadata.

A kind's `OPTIONS` are its settings that the tools expose as flags: each default is defined there only.
"""
import abc
import dataclasses
import hashlib
import time
import unicodedata

from ladnas_tf.bad_input import BadInput


class TargetError(BadInput):
    """An unknown target, or one this machine cannot run."""


class TransportError(Exception):
    """The connection to the device failed; worth retrying."""


@dataclasses.dataclass(frozen=True)
class Option:
    """A setting of a target kind: its keyword, the tools' flag for it, its one default and help."""
    keyword: str
    flag: str
    default: object
    help: str
    kind: str = 'string'  # string, list, enum, integer, float or bool (absl's DEFINE_<kind>)
    choices: tuple = ()
    lower_bound: float = None


# The retry policy every remote kind takes.
RETRY_OPTIONS = (
    Option('retries', 'retries', 3, 'Reconnections after a dropped connection (remote targets).', 'integer',
           lower_bound=0),
    Option('backoff_s', 'backoff_s', 2.0, 'First wait before a reconnection; doubles each time.', 'float',
           lower_bound=0),
)


def option_values(options, given, what):
    """{keyword: value} of `options`, a given value replacing its default; refuses unknown keywords."""
    known = {o.keyword: o.default for o in options}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TargetError(f'{what} takes no option {", ".join(unknown)} (known: {", ".join(known) or "none"})')
    return {**known, **given}


# How much of the model files a remote kind leaves on its device (sent files are named by SHA-256 and
# reused across runs; without a bound a 3,000-row table leaves ~30 GB on a board or phone).
CACHE_OPTION = Option('cache_mb', 'device_cache_mb', 200.0,
                      'ssh / adb: MB of model files kept on the device, least recently used removed first (the '
                      'reference network\'s file and the current one always stay).', 'float', lower_bound=0)


def plain_text(value, what):
    """`value` if it is a non-empty string that no shell or option parser can misread: no leading '-'
    (an option), no control or format character (a newline ends a command). Else a one-line TargetError."""
    if not isinstance(value, str) or not value:
        raise TargetError(f'{what} must be a non-empty string, got {value!r}')
    if value.startswith('-'):
        raise TargetError(f'{what} {value!r} starts with "-" (it would be read as an option)')
    if any(unicodedata.category(c)[0] == 'C' for c in value):
        raise TargetError(f'{what} {value!r} contains a control character')
    return value


def recorded_threads(description):
    """A description's interpreter threads (1 when not recorded), refused in one line unless a count."""
    threads = description.get('threads', 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or not 0 < threads <= 1024:
        raise TargetError(f'the recorded threads {threads!r} is not a thread count')
    return threads


def sha256(data):
    """A file's name on a device: its SHA-256, so a file already there is never sent again."""
    return hashlib.sha256(data).hexdigest()


class Retrying:
    """Calls `fn` again after a transport failure, with exponential backoff, then gives up in one line."""

    def __init__(self, what, retries, backoff_s, on_failure):
        self.what, self.retries, self.backoff_s, self.on_failure = what, retries, backoff_s, on_failure

    def __call__(self, fn):
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except TransportError as e:
                self.on_failure()
                if attempt == self.retries:
                    raise TargetError(f'{self.what}: connection lost ({e}) and {self.retries} retries failed; '
                                      'finished rows are kept: rerun the same command to resume') from None
                time.sleep(self.backoff_s * 2 ** attempt)


class Target(abc.ABC):
    """One kind of device to time on (see the module docstring)."""
    name = None
    OPTIONS = ()
    overlaps_conversion = False  # True when timing does not compete with making files on this machine

    @classmethod
    def device_of(cls, description):
        """The remote device a description names (None for a kind that times on this machine)."""
        return None

    @staticmethod
    def same_device(a, b):
        """Whether two names of a device of this kind name the same device."""
        return a == b

    @classmethod
    def from_description(cls, description, options=None):
        """The target a table (or an LPM trained on it) was measured on, from its recorded description;
        a remote kind takes where and how to connect from `options` (the user's), never from the file."""
        return cls(recorded_threads(description))

    def device_files(self):
        """(files, bytes) of model files this target keeps on its device, or None (none kept)."""
        return None

    def check_available(self):
        """Fails (TargetError, one line) when this machine cannot time on the target."""

    @abc.abstractmethod
    def describe(self):
        """The device as a table's metadata records it: target, device, threads, versions, ..."""

    @abc.abstractmethod
    def prepare(self, genotype, setting):
        """(artifact, params, MACs per image) of the genotype in the setting."""

    @abc.abstractmethod
    def measure(self, artifact, reference, **protocol):
        """(Stats, reference Stats, attempts) of an artifact bracketed by the reference's."""

    def close(self):
        """Releases a connection, if the target holds one."""


# Where a file comes from: the writers make the converter's file without TensorFlow, in a small fraction
# of its time (graph.tflite_writer, docs/tflite_writer_equivalence.md; int8: graph.tflite_int8_writer,
# the converter's structure with uncalibrated values, docs/tflite_int8_writer_equivalence.md); the
# converter stays as the reference.
TFLITE_SOURCES = ('writer', 'converter')
# The file's numeric format: float32, or full-integer int8 (int8 weights and activations, float32 input
# and output). A table's description records it (numeric_format); tables of two formats never mix.
NUMERIC_FORMATS = ('float32', 'int8')


# The file format a remote kind times (the tools' --numeric_format).
FORMAT_OPTION = Option('numeric_format', 'numeric_format', 'float32',
                       'ssh / adb: the file timed: float32, or full-integer int8.', 'enum', NUMERIC_FORMATS)


def checked(value, known, what):
    """`value` if it is one of `known`, else a one-line TargetError naming both."""
    if value not in known:
        raise TargetError(f'unknown {what} {value!r} (known: {", ".join(known)})')
    return value


def numeric_format(description):
    """A table's (or an LPM's target's) numeric format; descriptions from before it was recorded were
    int8 only for the cpu_tflite_int8 target."""
    return description.get('numeric_format') or ('int8' if description.get('target') == 'cpu_tflite_int8'
                                                 else 'float32')


def tflite_file(genotype, setting, source, numeric_format='float32'):
    """(file, params, MACs per image) of the genotype in the setting, from `source`, float32 or int8."""
    int8 = checked(numeric_format, NUMERIC_FORMATS, 'numeric format') == 'int8'
    if checked(source, TFLITE_SOURCES, 'TFLite source') == 'writer':
        from ladnas_tf.graph import tflite_int8_writer, tflite_writer
        write = tflite_int8_writer.timing_tflite_int8 if int8 else tflite_writer.timing_tflite
        return write(genotype, **setting.network_kwargs())
    from ladnas_tf.graph import constant  # imports TensorFlow: only where the converter runs
    convert = constant.genotype_to_tflite_int8 if int8 else constant.genotype_to_tflite
    return convert(genotype, **setting.network_kwargs())


class FileTarget(Target):
    """A target that times the network's TFLite file, float32 or int8 (written directly unless
    tflite_source='converter')."""
    tflite_source = 'writer'
    numeric_format = 'float32'

    def prepare(self, genotype, setting):
        return tflite_file(genotype, setting, self.tflite_source, self.numeric_format)
