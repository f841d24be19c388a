"""From data to a deployable file in one command: latency-aware search, training of the derived
network, float32 and int8 TFLite export, their interpreter accuracy and latency, one report.

    python -m tools.pipeline                      # offline, minutes on a CPU: the built-in digits
    python -m tools.pipeline --flagfile=configs/pipeline_quick.cfg --model_dir=runs/pipeline

Writes to --model_dir (default runs/pipeline): pipeline.json, search/, train/, export/ (the .tflite
files), latency.json, report.json and report.md. Killed in any stage, the same command resumes it and
skips the stages already complete; a directory of another configuration is refused without --overwrite.
Without flags it runs the quick default of configs/pipeline_quick.cfg. --deploy_format=int8 searches
with the int8 predictor and sets the int8 file's latency beside its prediction.
"""
import dataclasses
import os

from absl import flags, logging

from ladnas_tf import objective, pipeline, run_dir
from ladnas_tf.bad_input import BadInput
from . import cli

FLAGS = flags.FLAGS
# PipelineConfig's fields: the search's as --search_*, the training's unprefixed, the export's; one --seed.
cli.define_flags(pipeline.PipelineConfig, skip=('search_seed',))
# The search settings the pipeline always took without the prefix.
ALIASES = {'dataset': 'search_dataset', 'data_dir': 'search_data_dir', 'method': 'search_method',
           'order': 'search_order', 'lambda_': 'search_lambda_', 'target_latency_ms': 'search_target_latency_ms',
           'lpm': 'search_lpm', 'deploy_format': 'search_deploy_format', 'force_format': 'search_force_format'}
for alias, name in ALIASES.items():
    flags.DEFINE_alias(alias, name)
flags.DEFINE_string('model_dir', os.path.join('runs', 'pipeline'), 'Run directory.')
flags.DEFINE_bool('overwrite', False, 'Replace a run directory of another configuration.')


def config_from_flags():
    config = cli.config_from_flags(pipeline.PipelineConfig, skip=('search_seed',))
    return dataclasses.replace(config, search=dataclasses.replace(config.search, seed=config.recipe.seed))


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments {argv[1:]}')
    import tensorflow as tf
    config = config_from_flags()
    config.check()
    tf.config.experimental.enable_op_determinism()  # a resumed stage ends as an uninterrupted one
    result = pipeline.run(config, FLAGS.model_dir, FLAGS.overwrite, log=logging.info,
                          train_step_callback=run_dir.step_callback_from_env())
    print(f"genotype: {result['genotype']}")
    for row in result['models']:
        timed = objective.relative_text('latency', row['latency_ms'], row.get('reference_ms'), row['measured_on'])
        latency = f', {timed}' if timed else ''
        where = ('' if row['file'] is None
                 else f" {os.path.join(FLAGS.model_dir, row['file'])} ({row['file_bytes']:,} bytes)")
        print(f"{row['model']}: test top-1 {row['test_top1']:.2f}%{latency}{where}")
    for line in pipeline.latency_lines(result):
        print(line)
    if result['files_not_timed']:
        print(f"files not timed: {result['files_not_timed']}")
    print(f"report: {os.path.join(FLAGS.model_dir, pipeline.REPORT_MD)} ({result['seconds']:.0f} s this run)")

if __name__ == '__main__':
    cli.run(main)
