"""Quantization-aware training of a finished tools.train run into an int8 TFLite file.

    python -m tools.qat --model_dir=runs/quick --epochs=4

Reads the run's run_config.json (genotype, dataset, recipe) and final.keras (or --checkpoint=best),
rebuilds the network for tf_keras from its genotype, fine-tunes it with fake quantization, writes
model_int8_qat.tflite into the run directory, measures its test top-1 through the TFLite interpreter
and its CPU latency, and adds both (with the file size) under "qat" in the run's summary.json,
keeping everything already there; the run's float32 and post-training int8 files (tools.train
--export_tflite) get their CPU latency beside their accuracy (ladnas_tf.qat.quantize_run).
"""
import os

from absl import flags, logging

from ladnas_tf.bad_input import BadInput
from . import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('model_dir', None, 'A finished tools.train run directory.')
flags.DEFINE_enum('checkpoint', 'final', ['final', 'best'], 'Which saved model to quantize (best: chosen on '
                  'the run\'s validation split; only runs with --validation_fraction have one).')
flags.DEFINE_integer('epochs', 1, 'Fine-tuning epochs with fake quantization.', lower_bound=1)
flags.DEFINE_float('learning_rate', None, "Peak fine-tuning rate (default: a hundredth of the run's).")
flags.DEFINE_string('data_dir', None, 'tfds data_dir of the run\'s dataset, if it needs one.')
flags.DEFINE_integer('calibration_images', 256, 'Training images calibrating what QAT leaves in float.')
flags.DEFINE_integer('tflite_eval_limit', None, 'Evaluate on the first N test images only.')
flags.DEFINE_integer('latency_runs', 50, 'Timed interpreter runs for the latency (0: skip).', lower_bound=0)
flags.DEFINE_integer('threads', 1, 'Interpreter threads for the latency.', lower_bound=1)
flags.DEFINE_bool('overwrite', False, 'Replace an existing QAT file and its summary entry.')
flags.DEFINE_integer('verbose', 0, 'Keras progress during fine-tuning: 0 off, 1 per step, 2 per epoch.')


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments {argv[1:]}')
    if not FLAGS.model_dir:
        raise BadInput('--model_dir is required')
    from ladnas_tf import qat
    summary = qat.quantize_run(FLAGS.model_dir, FLAGS.checkpoint, FLAGS.epochs, FLAGS.learning_rate, FLAGS.data_dir,
                               FLAGS.calibration_images, FLAGS.tflite_eval_limit, FLAGS.latency_runs, FLAGS.threads,
                               FLAGS.overwrite, FLAGS.verbose, log=logging.info)
    result = summary['qat']
    print(f"{os.path.join(FLAGS.model_dir, qat.OUTPUT)}: QAT {FLAGS.epochs} epoch(s), fine-tuning "
          f"{result['fine_tune_seconds']:.0f} s; Keras test top-1 {summary['test_top1']:.2f}")
    files = {**summary.get('tflite', {}), 'int8_qat': result}
    for name, entry in files.items():
        latency = entry.get('cpu_latency', {}).get('latency_ms')
        print(f"  {name:9s} TFLite top-1 {entry['test_top1']:6.2f}  {entry['file_bytes']:>10,} bytes"
              + (f'  {latency:.3f} ms' if latency is not None else ''))


if __name__ == '__main__':
    cli.run(main)
