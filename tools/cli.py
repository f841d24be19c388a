"""What every tool shares: bad input ends in one line on stderr and a non-zero exit, no traceback."""
import sys

from absl import app


def run(main):
    """app.run(main), turning the library's input errors (ValueError subclasses) into one line."""
    def guarded(argv):
        try:
            return main(argv)
        except (ValueError, FileNotFoundError, FileExistsError) as e:
            print(f'error: {e}', file=sys.stderr)
            sys.exit(1)
    app.run(guarded)
