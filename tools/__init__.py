"""Command-line programs, run as `python -m tools.<name>` (absl flags; flagfiles in configs/).

Importing the package loads TensorFlow once with its C++ start-up lines (the oneDNN notice and absl's
pre-initialisation warning, printed whatever TF_CPP_MIN_LOG_LEVEL says) kept off stderr, so that a
tool's stderr holds its own lines only: a bad input is one line there, as promised."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


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
