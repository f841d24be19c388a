"""Exports an evaluation network of a genotype to TFLite and checks it against the Keras model.

    python -m tools.export_tflite --genotype=DARTS_V2 --output=d.tflite [--setting=imagenet] [--int8]

Writes d.tflite and d.json (genotype, setting, params, MACs, file size, parity, versions, conversion
time). Weights are freshly initialised (seed --seed): enough for latency, which does not depend on them.
Bad input prints one line naming the problem, exits 1 and writes nothing.
"""
from absl import flags

from ladnas_tf import genotypes
from ladnas_tf.bad_input import BadInput
from . import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('genotype', None, 'A published name (DARTS_V2, ...), or a JSON/DARTS-text file.')
flags.DEFINE_string('output', None, 'Path of the .tflite file; the summary goes beside it as .json.')
flags.DEFINE_string('setting', 'cifar', 'Network: cifar or imagenet.')
flags.DEFINE_integer('channels', None, 'Initial channels C (default: 36 cifar, 48 imagenet).')
flags.DEFINE_integer('cells', None, 'Number of cells (default: 20 cifar, 14 imagenet).')
flags.DEFINE_integer('num_classes', None, 'Classes (default: 10 cifar, 1000 imagenet).')
flags.DEFINE_integer('image_size', None, 'Input height and width (default: 32 cifar, 224 imagenet).')
flags.DEFINE_bool('int8', False, 'Full-integer post-training quantization, calibrated on random images.')
flags.DEFINE_integer('parity_images', 8, 'Random images on which TFLite and Keras logits are compared.')
flags.DEFINE_integer('threads', 1, 'TFLite interpreter threads for the parity check.')
flags.DEFINE_integer('seed', 0, 'Seed of the weight initialisation.')
flags.DEFINE_bool('overwrite', False, 'Replace an existing output and summary.')


def _check_flags():
    for name in ('genotype', 'output'):  # checked here, not by absl, to fail in one line
        if not getattr(FLAGS, name):
            raise BadInput(f'--{name} is required')
    for name in ('channels', 'cells', 'num_classes', 'image_size', 'parity_images', 'threads'):
        value = getattr(FLAGS, name)
        if value is not None and value < 1:
            raise BadInput(f'--{name} must be positive, got {value}')


def export():
    _check_flags()
    genotype = genotypes.resolve(FLAGS.genotype)
    # TensorFlow takes seconds to load: bad genotypes and flags are reported before it is needed.
    import keras
    from ladnas_tf import export as tflite_export, network
    tflite_export.check_outputs(FLAGS.output, FLAGS.overwrite)
    keras.utils.set_random_seed(FLAGS.seed)
    model = network.build_network(genotype, FLAGS.setting, FLAGS.channels, FLAGS.cells,
                                  FLAGS.num_classes, image_size=FLAGS.image_size, seed=FLAGS.seed)
    summary = tflite_export.export(model, FLAGS.output, FLAGS.int8, parity_images=FLAGS.parity_images,
                                   threads=FLAGS.threads, overwrite=FLAGS.overwrite)
    p = summary['parity']
    print(f"{FLAGS.output}: {summary['file_bytes']:,} bytes, {summary['params']:,} params, "
          f"{summary['macs'] / 1e6:.1f}M MACs, converted in {summary['conversion_seconds']:.1f} s; "
          f"max logit diff {p['max_abs_diff']:.2e} = {p['relative_diff']:.2e} of the logit scale, "
          f"top-1 agreement {p['top1_agreement']:.0%}")


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments {argv[1:]}')
    export()


if __name__ == '__main__':
    cli.run(main)
