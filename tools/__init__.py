"""Command-line programs: `python -m tools.<name>` in a clone, `ladnas <name>` once installed (absl flags;
flagfiles in configs/).

TensorFlow, when a tool first imports it, loads with its C++ start-up lines (the oneDNN notice and absl's
pre-initialisation warning, printed whatever TF_CPP_MIN_LOG_LEVEL says) kept off stderr, so that a
tool's stderr holds its own lines only: a bad input is one line there, as promised. Listing the tools
(`ladnas --help`) imports no TensorFlow at all."""
import importlib.abc
import importlib.util
import os
import sys

# oneDNN's kernels for the CPU: TensorFlow turns them on by itself only on AVX-512/AMX-class CPUs, yet on an
# AVX2-only one they make a search step 1.3-1.5x faster than its Eigen kernels (depthwise convolutions and
# their gradients: docs/benchmarks/supernet_step.json, tf-eigen against tensorflow). A value the user sets is kept.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
# 3 keeps TensorFlow's C++ ERROR lines off stderr as well: the default run meets one at its first graph with
# an int32 Transpose ("oneDNN supports DT_INT32 only on platforms with AVX-512. Falling back to the default
# Eigen-based implementation"), a notice logged as an error that no user can act on. An op that fails
# raises a Python exception (one line, or a traceback for a bug), so a failure is never hidden, only C++'s
# commentary; FATAL lines still print, and a TF_CPP_MIN_LOG_LEVEL the user sets (0: everything) is kept.
# TF_ENABLE_ONEDNN_OPTS=0 would drop the line too, but at the cost of the speed above.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with file descriptor 2 on /dev/null: its C++ library prints there."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            self.loader.exec_module(module)  # an import error is raised after stderr is back
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
            module.__spec__.loader = module.__loader__ = self.loader  # the package as if found plainly


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as the other finders do, once, and hands it to _QuietLoader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != 'tensorflow':
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


if 'tensorflow' not in sys.modules:
    sys.meta_path.insert(0, _QuietTensorFlow())
