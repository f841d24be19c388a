"""From data to a deployable file in one command: latency-aware search, training of the derived
network, float32 and int8 TFLite export, their interpreter accuracy and latency, one report.

    python -m tools.pipeline                      # offline, minutes on a CPU: the built-in digits
    python -m tools.pipeline --flagfile=configs/pipeline_quick.cfg --model_dir=runs/pipeline

Writes to --model_dir (default runs/pipeline): pipeline.json, search/, train/, export/ (the .tflite
files), latency.json, report.json and report.md. Killed in any stage, the same command resumes it and
skips the stages already complete; a directory of another configuration is refused without --overwrite.
Without flags it runs the quick default of configs/pipeline_quick.cfg.
"""
import os


from absl import flags, logging

from ladnas_tf.bad_input import BadInput
from . import cli

FLAGS = flags.FLAGS
# The data, shared by the search and the training.
flags.DEFINE_string('dataset', 'digits',
                    "digits (built in), cifar10, imagenet2012, imagenet_folder, or an image folder's path.")
flags.DEFINE_string('data_dir', None, 'tfds data_dir (or the folder of dataset=folder / imagenet_folder).')
flags.DEFINE_integer('seed', 0, 'Seed of both stages.')
# The search (ladnas_tf.search.SearchConfig).
flags.DEFINE_enum('method', 'darts', ['darts', 'pcdarts'], 'DARTS or PC-DARTS.')
flags.DEFINE_enum('order', 'first', ['first', 'second'], 'First or second order.')
flags.DEFINE_integer('search_epochs', 4, 'Search epochs.')
flags.DEFINE_integer('search_batch_size', 32, 'Search batch size (both halves).')
flags.DEFINE_integer('search_channels', 8, 'Supernet initial channels C.')
flags.DEFINE_integer('search_layers', 5, 'Supernet cells.')
flags.DEFINE_integer('search_image_size', None, "Search input side (default: the dataset's own; digits 16).")
flags.DEFINE_integer('search_max_steps_per_epoch', None, 'Cap on search steps per epoch.')
flags.DEFINE_float('lambda_', 0.1, "Weight of LAT(alpha) in units of DARTS_V2's predicted latency (0: plain DARTS).")
flags.DEFINE_float('target_latency_ms', None, 'Adapt lambda_ so that the derived network meets this latency.')
flags.DEFINE_string('lpm', 'cpu_tflite_cifar',
                    'The latency predictor: a name (python -m tools.lpms) or an LPM directory.')
flags.DEFINE_bool('measure_searched', True,
                  "Also time the derived genotype at the LPM's setting (beside its prediction).")
# The training (ladnas_tf.train.Recipe).
flags.DEFINE_enum('setting', 'cifar', ['cifar', 'imagenet'], 'Network: cifar or imagenet stem and head.')
flags.DEFINE_integer('channels', 8, 'Initial channels C of the trained network.')
flags.DEFINE_integer('layers', 5, 'Cells of the trained network.')
flags.DEFINE_integer('image_size', 16, "Training input side (None: the dataset's own).")
flags.DEFINE_integer('epochs', 10, 'Training epochs.')
flags.DEFINE_integer('batch_size', 64, 'Global training batch size.')
flags.DEFINE_float('learning_rate', 0.05, 'Peak learning rate (cosine to 0).')
flags.DEFINE_float('weight_decay', 3e-4, 'Coupled weight decay.')
flags.DEFINE_bool('auxiliary', False, 'Auxiliary head (needs 32x32 CIFAR inputs).')
flags.DEFINE_float('drop_path_prob', 0.1, 'Final drop-path rate.')
flags.DEFINE_integer('cutout', 4, 'Cutout length (0: off).')
flags.DEFINE_enum('augment', 'cifar', ['cifar', 'imagenet', 'none'], 'Training augmentation.')
flags.DEFINE_float('validation_fraction', 0.1, 'Share of the training split held out to choose best.keras.')
# Export and latency.
flags.DEFINE_integer('calibration_images', 256, 'Training images calibrating the int8 file.')
flags.DEFINE_integer('tflite_eval_limit', None, 'Test images run through the interpreter (default: all).')
flags.DEFINE_integer('latency_runs', 50, 'Timed interpreter runs per file.')
flags.DEFINE_string('model_dir', os.path.join('runs', 'pipeline'), 'Run directory.')
flags.DEFINE_bool('overwrite', False, 'Replace a run directory of another configuration.')


def _lpm_dir(value):
    """The LPM directory --lpm names (a registry name or a directory), None for none."""
    if not value:
        return None
    from ladnas_tf.latency import registry
    return registry.resolve(value)


def config_from_flags():
    from ladnas_tf import pipeline, search, train
    search_config = search.SearchConfig(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, method=FLAGS.method, order=FLAGS.order,
        epochs=FLAGS.search_epochs, batch_size=FLAGS.search_batch_size, channels=FLAGS.search_channels,
        layers=FLAGS.search_layers, image_size=FLAGS.search_image_size, seed=FLAGS.seed,
        max_steps_per_epoch=FLAGS.search_max_steps_per_epoch, lambda_=FLAGS.lambda_,
        target_latency_ms=FLAGS.target_latency_ms, lpm_dir=_lpm_dir(FLAGS.lpm))
    recipe = train.Recipe(
        setting=FLAGS.setting, channels=FLAGS.channels, layers=FLAGS.layers, image_size=FLAGS.image_size,
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        weight_decay=FLAGS.weight_decay, auxiliary=FLAGS.auxiliary, drop_path_prob=FLAGS.drop_path_prob,
        cutout=FLAGS.cutout, augment=None if FLAGS.augment == 'none' else FLAGS.augment,
        validation_fraction=FLAGS.validation_fraction, seed=FLAGS.seed)
    return pipeline.PipelineConfig(search_config, recipe, FLAGS.calibration_images, FLAGS.tflite_eval_limit,
                                   FLAGS.latency_runs, FLAGS.measure_searched)


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments {argv[1:]}')
    import tensorflow as tf
    from ladnas_tf import pipeline, train
    config = config_from_flags()
    config.check()
    tf.config.experimental.enable_op_determinism()  # a resumed stage ends as an uninterrupted one
    result = pipeline.run(config, FLAGS.model_dir, FLAGS.overwrite, log=logging.info,
                          train_step_callback=train.step_callback_from_env())
    print(f"genotype: {result['genotype']}")
    for row in result['models']:
        latency = '' if row['latency_ms'] is None else f", {row['latency_ms']:.3f} ms on {result['latency_target']}"
        where = ('' if row['file'] is None
                 else f" {os.path.join(FLAGS.model_dir, row['file'])} ({row['file_bytes']:,} bytes)")
        print(f"{row['model']}: test top-1 {row['test_top1']:.2f}%{latency}{where}")
    searched = result['searched_network']
    if searched['predicted_ms'] is not None:
        measured = ('' if searched['measured_ms'] is None else f", measured {searched['measured_ms']:.2f} ms "
                    f"({searched['measured_vs_reference']:.2f}x DARTS_V2 timed alongside)")
        print(f"at the LPM's setting ({searched['setting']}): predicted {searched['predicted_ms']:.2f} ms{measured}")
    if result['files_not_timed']:
        print(f"files not timed: {result['files_not_timed']}")
    print(f"report: {os.path.join(FLAGS.model_dir, 'report.md')} ({result['seconds']:.0f} s this run)")


if __name__ == '__main__':
    cli.run(main)
