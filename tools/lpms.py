"""The latency predictors this machine knows by name: shipped (ladnas_tf/predictors/) and user-made.

    python -m tools.lpms            # a table
    python -m tools.lpms --json     # the same rows as JSON

User predictors live in $LADNAS_LPM_HOME (default ~/.ladnas_tf/lpms); tools.adapt_lpm --name adds one.
Any name listed here can be given wherever a predictor is asked for (tools.search --lpm=<name>), except
one whose status is BROKEN (with why: a file of it that cannot be believed), which is refused there.
"""
import json

from absl import flags

from ladnas_tf.bad_input import BadInput
from . import cli

FLAGS = flags.FLAGS
flags.DEFINE_bool('json', False, 'Print the rows as JSON instead of a table.')

COLUMNS = (('name', 'name'), ('kind', 'kind'), ('target', 'target'), ('setting', 'setting'),
           ('device', 'device'), ('cells', 'cells'), ('table_rows', 'rows'), ('mre_pct', 'MRE %'),
           ('kendall_tau', 'tau'), ('mre_pct_normalised', 'MRE % norm'), ('kendall_tau_normalised', 'tau norm'),
           ('scored_by', 'scored by'), ('adapted_from', 'adapted from'), ('broken', 'status'))


def _cell(key, value):
    if key == 'broken':
        return 'ok' if value is None else f'BROKEN: {value}'
    if value is None:
        return '-'
    if key.startswith('mre_pct'):
        return f'{value:.2f}'
    if key.startswith('kendall_tau'):
        return f'{value:.3f}'
    return str(value)


def table(rows):
    """The rows as aligned text columns."""
    cells = [[title for _, title in COLUMNS]] + [[_cell(k, r.get(k)) for k, _ in COLUMNS] for r in rows]
    widths = [max(len(row[c]) for row in cells) for c in range(len(COLUMNS))]
    return '\n'.join('  '.join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments: {" ".join(argv[1:])}')
    from ladnas_tf.lpm import registry
    rows = registry.list_predictors()
    if FLAGS.json:
        print(json.dumps(rows, indent=2))
        return
    print(table(rows))
    print(f'user predictors: {registry.user_home()} (${registry.HOME_ENV})')


if __name__ == '__main__':
    cli.run(main)
