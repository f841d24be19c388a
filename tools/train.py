"""Trains an evaluation network of a genotype from scratch (DARTS's CIFAR-10 or ImageNet recipe).

    python -m tools.train --flagfile=configs/train_cifar10.cfg --genotype=DARTS_V2 \
        --dataset=../shared/data/cifar10 --model_dir=runs/darts_v2_cifar10

Writes to --model_dir: run_config.json, checkpoints/, logs/ (TensorBoard), history.json, final.keras,
best.keras (chosen on --validation_fraction of the training data held out; none when 0) and
summary.json (every figure with its split: the test split is reported, never used to choose; params,
MACs, genotype, epochs, seconds). Killed, the same command resumes from the last checkpoint (epoch ends
and every --checkpoint_every seconds) and ends with the weights of an uninterrupted run (with
--deterministic); a directory of another run is refused without --overwrite.
--batch_size and --learning_rate are global: the rate is the one for the whole batch, which is split
over the replicas of --strategy (mirrored: the local devices; multi_worker: the cluster in TF_CONFIG).
"""
import os

from absl import flags, logging

from ladnas_tf import data, distribute, genotypes, run_dir, train
from ladnas_tf.bad_input import BadInput
from . import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('genotype', None, 'A published name (DARTS_V2, ...), or a JSON/DARTS-text file.')
flags.DEFINE_string('dataset', 'digits', "digits, cifar10, imagenet2012, or an image folder's path.")
flags.DEFINE_string('data_dir', None, 'tfds data_dir (or the folder of dataset=folder).')
cli.define_flags(train.Recipe)  # the recipe's settings: Recipe's fields, defaults and help
flags.DEFINE_float('checkpoint_every', 600, 'Seconds between mid-epoch checkpoints (0: epoch ends only).')
flags.DEFINE_bool('deterministic', True, 'TensorFlow op determinism: a resumed run ends as an uninterrupted one.')
flags.DEFINE_enum('strategy', 'default', distribute.STRATEGIES, 'tf.distribute strategy.')
flags.DEFINE_string('model_dir', None, 'Run directory.')
flags.DEFINE_bool('overwrite', False, 'Replace an existing run directory.')
flags.DEFINE_bool('export_tflite', False, 'Also export float32 and int8 (post-training) TFLite files and '
                  'measure their test top-1 through the interpreter.')
flags.DEFINE_integer('calibration_images', 256, 'Training images calibrating the int8 export.')
flags.DEFINE_integer('tflite_eval_limit', None, 'Evaluate the TFLite files on the first N test images only.')
flags.DEFINE_integer('verbose', 1, 'Progress bar: 0 off, 1 per step, 2 per epoch.')


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments {argv[1:]}')
    for name in ('genotype', 'model_dir'):  # checked here, not by absl, to fail in one line
        if not getattr(FLAGS, name):
            raise BadInput(f'--{name} is required')
    if FLAGS.deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    # Before anything runs an op: multi_worker configures TensorFlow's collective ops.
    strategy = distribute.make_strategy(FLAGS.strategy)
    genotype = genotypes.resolve(FLAGS.genotype)
    recipe = cli.config_from_flags(train.Recipe)
    recipe.check()
    summary = train.train(genotype, recipe, FLAGS.model_dir, FLAGS.dataset, FLAGS.data_dir, strategy,
                          FLAGS.overwrite, FLAGS.verbose, log=logging.info,
                          checkpoint_every=FLAGS.checkpoint_every, step_callback=run_dir.step_callback_from_env())
    if FLAGS.export_tflite and 'tflite' not in summary:
        import keras
        model = keras.models.load_model(os.path.join(FLAGS.model_dir, 'final.keras'))
        sets = [data.load(FLAGS.dataset, split, FLAGS.data_dir, FLAGS.image_size) for split in ('train', 'test')]
        summary['tflite'] = train.export_tflite(model, FLAGS.model_dir, *sets, FLAGS.calibration_images,
                                                FLAGS.tflite_eval_limit, overwrite=True)
        train.write_summary(FLAGS.model_dir, summary)
    tflite = ''.join(f", {k} TFLite top-1 {v['test_top1']:.2f}" for k, v in summary.get('tflite', {}).items())
    best = (f", best.keras: epoch {summary['best_epoch']}, validation top-1 {summary['best_validation_top1']:.2f}"
            if summary.get('best_epoch') else '')
    print(f"{FLAGS.model_dir}: {summary['epochs']} epochs, final test top-1 {summary['test_top1']:.2f} "
          f"top-5 {summary['test_top5']:.2f}{best}, "
          f"{summary['params']:,} params, {summary['macs'] / 1e6:.1f}M MACs, {summary['seconds']:.0f} s{tflite}")


if __name__ == '__main__':
    cli.run(main)
