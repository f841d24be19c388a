"""BUILD states the real import graph: every library's deps are the targets its sources import, no more, no
less (a data-only target read with importlib.resources excepted), and every library module has a target.
No import, a function's included, runs in a circle, and the search does not reach the remote targets."""
import ast
import glob as globlib
import os

import pytest

RESOURCE_TARGETS = {'predictors'}  # read as package data, never imported


@pytest.fixture(scope='module')
def libraries(repo_root):
    """BUILD executed (Starlark is Python here) with recording stand-ins for Bazel's rules."""
    found = {}

    def glob(patterns, exclude=()):
        matched = {os.path.relpath(f, repo_root) for p in patterns
                   for f in globlib.glob(os.path.join(repo_root, p), recursive=True)}
        return sorted(f for f in matched - set(exclude) if os.path.isfile(os.path.join(repo_root, f)))

    def py_library(name, srcs=(), deps=(), data=()):
        found[name] = (list(srcs), {d.lstrip(':') for d in deps})

    def ignore(*args, **kwargs):
        return None

    with open(os.path.join(repo_root, 'BUILD')) as f:
        exec(f.read(), {'glob': glob, 'py_library': py_library, 'py_binary': ignore, 'py_test': ignore,
                        'package': ignore})
    return found


def _imported_files(repo_root, path):
    """The files a module's `ladnas_tf` imports can name (module or package, for each imported name)."""
    with open(os.path.join(repo_root, path)) as f:
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


def _modules(repo_root):
    return {os.path.relpath(f, repo_root)
            for f in globlib.glob(os.path.join(repo_root, 'ladnas_tf/**/*.py'), recursive=True)}


def test_every_library_module_has_a_target(libraries, repo_root):
    owner = {f for srcs, _ in libraries.values() for f in srcs}
    assert sorted(_modules(repo_root) - owner) == []


def test_deps_are_the_imports(libraries, repo_root):
    owner = {f: name for name, (srcs, _) in libraries.items() for f in srcs}
    for name, (srcs, deps) in libraries.items():
        needed = {owner[f] for src in srcs if src.endswith('.py') for f in _imported_files(repo_root, src)
                  if f in owner and owner[f] != name and f != 'ladnas_tf/__init__.py'}
        assert (name, sorted(needed)) == (name, sorted(deps - RESOURCE_TARGETS))


def test_no_import_runs_in_a_circle(repo_root):
    """Module to module, imports inside functions included (ladnas_tf/__init__.py imports nothing but by
    name, on first use of a public name)."""
    modules = _modules(repo_root)
    edges = {m: {f for f in _imported_files(repo_root, m) if f in modules and f != m} for m in modules}
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError('import circle: ' + ' -> '.join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for other in sorted(edges[module]):
            visit(other)
        path.pop()
        done.add(module)
    for module in sorted(modules):
        visit(module)


def test_the_search_does_not_reach_the_remote_targets(libraries):
    reached, todo = set(), ['differentiable_search']
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += sorted(libraries[name][1] - RESOURCE_TARGETS)
    remote = {f for f in libraries['profiling_remote'][0]}
    assert 'profiling_remote' not in reached and not remote & {f for n in reached for f in libraries[n][0]}
    assert remote == {'ladnas_tf/profiling/targets/ssh.py', 'ladnas_tf/profiling/targets/adb.py'}
