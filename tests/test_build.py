"""BUILD states the real import graph: every library's deps are the targets its sources import, no more, no
less (a data-only target read with importlib.resources excepted), and every library module has a target."""
import ast
import glob as globlib
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESOURCE_TARGETS = {'predictors'}  # read as package data, never imported


def _libraries():
    """Executes BUILD (Starlark is Python here) with recording stand-ins for Bazel's rules."""
    libraries = {}

    def glob(patterns, exclude=()):
        found = {os.path.relpath(f, ROOT) for p in patterns
                 for f in globlib.glob(os.path.join(ROOT, p), recursive=True)}
        return sorted(f for f in found - set(exclude) if os.path.isfile(os.path.join(ROOT, f)))

    def py_library(name, srcs=(), deps=(), data=()):
        libraries[name] = (list(srcs), {d.lstrip(':') for d in deps})

    def ignore(*args, **kwargs):
        return None

    with open(os.path.join(ROOT, 'BUILD')) as f:
        exec(f.read(), {'glob': glob, 'py_library': py_library, 'py_binary': ignore, 'py_test': ignore,
                        'package': ignore})
    return libraries


def _imported_files(path):
    """The files a module's `ladnas_tf` imports can name (module or package, for each imported name)."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('ladnas_tf'):
            names = [f'{node.module}.{a.name}' for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith('ladnas_tf')]
        for name in names:
            stem = name.replace('.', '/')
            yield from (stem + '.py', stem + '/__init__.py')


def test_every_library_module_has_a_target():
    owner = {f for srcs, _ in _libraries().values() for f in srcs}
    modules = {os.path.relpath(f, ROOT) for f in globlib.glob(os.path.join(ROOT, 'ladnas_tf/**/*.py'), recursive=True)}
    assert sorted(modules - owner) == []


def test_deps_are_the_imports():
    libraries = _libraries()
    owner = {f: name for name, (srcs, _) in libraries.items() for f in srcs}
    for name, (srcs, deps) in libraries.items():
        needed = {owner[f] for src in srcs if src.endswith('.py') for f in _imported_files(src)
                  if f in owner and owner[f] != name and f != 'ladnas_tf/__init__.py'}
        assert (name, sorted(needed)) == (name, sorted(deps - RESOURCE_TARGETS))
