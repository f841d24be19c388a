"""The base of every error that reports bad input (a malformed genotype, a corrupt table, an unknown flag
value, an LPM of another search space): the CLIs print it as one line and exit non-zero. Any other
exception, a plain ValueError included, is a bug and keeps its traceback."""


class BadInput(ValueError):
    """Input that cannot be used, said in one line naming the problem."""
