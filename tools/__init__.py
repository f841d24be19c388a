"""Command-line programs: `python -m tools.<name>` in a clone, `ladnas <name>` once installed (absl flags;
flagfiles in configs/).

Importing the package loads TensorFlow once with its C++ start-up lines (the oneDNN notice and absl's
pre-initialisation warning, printed whatever TF_CPP_MIN_LOG_LEVEL says) kept off stderr, so that a
tool's stderr holds its own lines only: a bad input is one line there, as promised."""
import os

# 3 keeps TensorFlow's C++ ERROR lines off stderr as well: the default run meets one at its first graph with
# an int32 Transpose ("oneDNN supports DT_INT32 only on platforms with AVX-512. Falling back to the default
# Eigen-based implementation"), a notice logged as an error that no user can act on. An op that fails
# raises a Python exception (one line, or a traceback for a bug), so a failure is never hidden, only C++'s
# commentary; FATAL lines still print, and a TF_CPP_MIN_LOG_LEVEL the user sets (0: everything) is kept.
# TF_ENABLE_ONEDNN_OPTS=0 would drop the line too, but by changing the kernels and their speed.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def _import_tensorflow_quietly():
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401  (an import error is raised below, after stderr is back)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()
