"""Every flag a tool makes from a config dataclass round-trips to its field and back: with no flags the
tool runs the dataclass's defaults, and a non-default value given on the command line lands in its field
(and the field's value is what the flag shows). Each tool in its own process: two tools define flags of
the same names."""
import json
import textwrap

import pytest

CHECK = textwrap.dedent('''
    import dataclasses, importlib, json, sys
    from absl import flags
    from tools import cli
    from ladnas_tf import pipeline, search, train
    from ladnas_tf.lpm import registry
    tool, config_class, skip, aliases = sys.argv[1], eval(sys.argv[2]), tuple(json.loads(sys.argv[3])), \\
        json.loads(sys.argv[4])
    module = importlib.import_module('tools.' + tool)
    FLAGS = flags.FLAGS
    LPM = registry.resolve(search.DEFAULT_LPM)

    def parse(*args):
        FLAGS.unparse_flags()
        FLAGS(['tool', *args])
        return cli.config_from_flags(config_class, skip=skip)

    def at(config, path):
        for name in path:
            config = getattr(config, name)
        return config

    def other(name, value, field_choices):
        if name.endswith(('lpm', 'latency_error_lpm')):
            return LPM, LPM                                  # a predictor: its directory
        if field_choices:
            pick = next(c for c in field_choices if c != value)
            return ('none' if pick is None else pick), pick
        if isinstance(value, bool):
            return ('false' if value else 'true'), not value
        if isinstance(value, int) or (value is None and FLAGS[name].flag_type() == 'int'):
            return str((value or 0) + 3), (value or 0) + 3
        if isinstance(value, float) or (value is None and FLAGS[name].flag_type() == 'float'):
            return repr((value or 0.0) + 0.5), (value or 0.0) + 0.5
        return 'elsewhere', 'elsewhere'

    fields = cli.flag_fields(config_class, skip=skip)
    leaves = {f.path for f in cli._flags_of(config_class)}
    assert set(fields.values()) | {f.path for f in cli._flags_of(config_class) if f.name in skip} == leaves
    defaults = parse()
    assert defaults == config_class(), (defaults, config_class())  # no flags: the dataclass's defaults
    checked = []
    for flag in cli._flags_of(config_class):
        if flag.name in skip:
            continue
        text, want = other(flag.name, at(defaults, flag.path), flag.field.metadata.get('choices'))
        config = parse(f'--{flag.name}={text}')
        assert at(config, flag.path) == want, (flag.name, at(config, flag.path), want)
        shown = FLAGS[flag.name].value
        assert (None if shown == 'none' and None in flag.field.metadata.get('choices', ()) else shown) == \\
            at(config, flag.path) or flag.name.endswith('lpm'), flag.name   # and back: the flag shows the field
        checked.append(flag.name)
    by_name = {flag.name: flag for flag in cli._flags_of(config_class)}
    for alias, name in aliases.items():
        text, want = other(name, at(defaults, fields[name]), by_name[name].field.metadata.get('choices'))
        assert at(parse(f'--{alias}={text}'), fields[name]) == want, alias
    print(json.dumps(checked))
''')

TOOLS = {
    'search': ('search.SearchConfig', [], {}),
    'sweep': ('search.SearchConfig', [], {}),  # the sweep takes the search's flags as its base
    'train': ('train.Recipe', [], {}),
    'pipeline': ('pipeline.PipelineConfig', ['search_seed'],
                 {'method': 'search_method', 'order': 'search_order', 'lambda_': 'search_lambda_',
                  'dataset': 'search_dataset', 'target_latency_ms': 'search_target_latency_ms'}),
}


@pytest.mark.slow
@pytest.mark.parametrize('tool', sorted(TOOLS))
def test_every_flag_round_trips_to_its_field(tool, run_tool):
    config_class, skip, aliases = TOOLS[tool]
    out = run_tool('-c', CHECK, tool, config_class, json.dumps(skip), json.dumps(aliases),
                   env={'TF_CPP_MIN_LOG_LEVEL': '3'}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    checked = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(checked) > 15


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['search', 'train', 'pipeline'])
def test_the_flag_names_of_the_configs_stay(tool, run_tool):
    """The names configs/*.cfg and users give keep working (the architect's without a prefix)."""
    names = {'search': ['epochs', 'learning_rate', 'arch_learning_rate', 'arch_weight_decay', 'order', 'lpm',
                        'lambda_', 'latency_error_lpm', 'max_steps_per_epoch'],
             'train': ['setting', 'channels', 'augment', 'validation_fraction', 'lr_schedule', 'seed'],
             'pipeline': ['search_epochs', 'search_batch_size', 'search_channels', 'search_layers', 'lpm',
                          'lambda_', 'method', 'dataset', 'seed', 'channels', 'epochs', 'auxiliary']}[tool]
    code = f'import tools.{tool} as t; from absl import flags; print([n for n in {names!r} if n not in flags.FLAGS])'
    out = run_tool('-c', code, env={'TF_CPP_MIN_LOG_LEVEL': '3'}, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == '[]', out.stdout + out.stderr[-2000:]
