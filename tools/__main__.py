"""Every tool behind one command: `ladnas <command> [flags]` once installed, `python -m tools <command>`
in a clone. Without a command (or with --help) it lists the commands; `<command> --help` gives its flags."""
import ast
import importlib.resources
import os
import runpy
import sys

from . import cli


def _summary(source):
    """The first line of a tool's docstring if the source is a program (has a `__main__` block), else None."""
    tree = ast.parse(source)
    is_program = any(isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'"
                     for node in tree.body)
    return (ast.get_docstring(tree) or '').split('\n')[0] if is_program else None


def commands():
    """{name: one-line summary} of the tools, read from their sources: importing them all would define
    every tool's flags in one process, and some tools define the same flag names."""
    found = {}
    for entry in importlib.resources.files(__package__).iterdir():
        name, ext = os.path.splitext(entry.name)
        if ext == '.py' and name != '__main__':
            summary = _summary(entry.read_text(encoding='utf-8'))
            if summary is not None:
                found[name] = summary
    return dict(sorted(found.items()))


def _program_name(argv0):
    return f'python -m {__package__}' if os.path.basename(argv0) == '__main__.py' else os.path.basename(argv0)


def usage(program, available):
    width = max(map(len, available))
    lines = [f'usage: {program} <command> [flags]    ({program} <command> --help: its flags)', '', 'commands:']
    lines += [f'  {name.ljust(width)}  {summary}' for name, summary in available.items()]
    return '\n'.join(lines)


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    program, available = _program_name(argv[0]), commands()
    if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
        print(usage(program, available))
        return
    command = argv[1]
    if command not in available:
        cli.fail(f'unknown command {command!r} ({program} --help lists them)')
    # Run the tool as `python -m` would, as __main__: absl's --help shows the docstring and flags of the
    # __main__ module, and the tool's own `if __name__ == '__main__'` block starts it.
    sys.argv = [f'{program} {command}'] + argv[2:]
    runpy.run_module(f'{__package__}.{command}', run_name='__main__', alter_sys=True)


if __name__ == '__main__':
    main()
