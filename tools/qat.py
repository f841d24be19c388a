"""Quantization-aware training of a finished tools.train run into an int8 TFLite file.

    python -m tools.qat --model_dir=runs/quick --epochs=4

Reads the run's run_config.json (genotype, dataset, recipe) and final.keras (or --checkpoint=best),
rebuilds the network for tf_keras from its genotype, fine-tunes it with fake quantization, writes
model_int8_qat.tflite into the run directory, measures its test top-1 through the TFLite interpreter
and its CPU latency, and adds both (with the file size) under "qat" in the run's summary.json,
keeping everything already there; the run's float32 and post-training int8 files (tools.train
--export_tflite) get their CPU latency beside their accuracy.
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

OUTPUT = 'model_int8_qat.tflite'
RUN_CONFIG, SUMMARY = 'run_config.json', 'summary.json'  # train.RUN_CONFIG, train.SUMMARY


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments {argv[1:]}')
    if not FLAGS.model_dir:
        raise BadInput('--model_dir is required')
    run_dir = FLAGS.model_dir
    # Checked before TensorFlow loads (seconds): a wrong directory fails at once.
    config, summary = _read_json(run_dir, RUN_CONFIG), _read_json(run_dir, SUMMARY)
    output = os.path.join(run_dir, OUTPUT)
    if (os.path.exists(output) or 'qat' in summary) and not FLAGS.overwrite:
        raise FileExistsError(f'{output} or its summary entry exists (pass --overwrite to replace them)')
    model_path = os.path.join(run_dir, f'{FLAGS.checkpoint}.keras')
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f'{model_path} does not exist (is {run_dir} a finished tools.train run?)')

    import keras
    from ladnas_tf import data, qat, train
    recipe = train.Recipe(**config['recipe'])
    train_set, test_set = (data.load(config['dataset'], split, FLAGS.data_dir, recipe.image_size)
                           for split in ('train', 'test'))
    model = keras.models.load_model(model_path)
    tflite_bytes, result = qat.quantization_aware_training(
        model, train_set, test_set, recipe, FLAGS.epochs, FLAGS.learning_rate, FLAGS.calibration_images,
        FLAGS.tflite_eval_limit, FLAGS.verbose, log=logging.info)
    result = {'file': OUTPUT, 'checkpoint': FLAGS.checkpoint, **result}
    if FLAGS.latency_runs:
        result['cpu_latency'] = _latency(tflite_bytes)
    _write_bytes(output, tflite_bytes)
    summary = _read_json(run_dir, SUMMARY)  # afresh: keep whatever was added meanwhile
    summary['qat'] = result
    if FLAGS.latency_runs:  # the run's other TFLite files, timed alike for comparison
        for entry in summary.get('tflite', {}).values():
            path = os.path.join(run_dir, entry.get('file', ''))
            if os.path.isfile(path) and ('cpu_latency' not in entry or FLAGS.overwrite):
                with open(path, 'rb') as f:
                    entry['cpu_latency'] = _latency(f.read())
    train.write_summary(run_dir, summary)
    print(f"{output}: QAT {FLAGS.epochs} epoch(s), fine-tuning {result['fine_tune_seconds']:.0f} s; "
          f"Keras test top-1 {summary['test_top1']:.2f}")
    files = {**summary.get('tflite', {}), 'int8_qat': result}
    for name, entry in files.items():
        latency = entry.get('cpu_latency', {}).get('latency_ms')
        print(f"  {name:9s} TFLite top-1 {entry['test_top1']:6.2f}  {entry['file_bytes']:>10,} bytes"
              + (f'  {latency:.3f} ms' if latency is not None else ''))


def _latency(tflite_bytes):
    """Median ms of the interpreter's invoke(), as the cpu_tflite profiling target times a network."""
    from ladnas_tf.profiling import agent, measure
    from ladnas_tf.profiling.targets import local
    target = local.CpuTFLite(FLAGS.threads)
    stats, attempts = measure.measure(target.runner(tflite_bytes), warmup=5, runs=FLAGS.latency_runs)
    return {'latency_ms': stats.latency_ms, 'cv': stats.cv, 'runs': stats.runs, 'attempts': attempts,
            'threads': FLAGS.threads, 'device': agent.cpu_model()}


def _read_json(run_dir, name):
    import json
    path = os.path.join(run_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path} does not exist (is {run_dir} a finished tools.train run?)')
    with open(path) as f:
        return json.load(f)


def _write_bytes(path, payload):
    temp = path + '.tmp'
    with open(temp, 'wb') as f:
        f.write(payload)
    os.replace(temp, path)


if __name__ == '__main__':
    cli.run(main)
