"""The TFLite converters: float32, and full-integer int8 post-training quantization (int8 weights and
activations, float32 input and output), from a function with a static input shape.

A static batch matters: a dynamic one leaves SPACE_TO_BATCH_ND around the dilated convolutions, which
a phone would time. Variables are folded into constants before the converter sees the graph
(from_keras_model is several times slower).
"""
import contextlib
import logging
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

CALIBRATION_BATCHES = 4  # default int8 calibration: a few batches of random images
CALIBRATION_BATCH_SIZE = 8


def random_images(count, image_size, seed=0):
    """Seeded standard-normal images, the scale of normalised inputs: for calibration and parity checks."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, image_size, image_size, 3)).astype(np.float32)


def frozen_function(call, image_size):
    """call(images) traced on one static image, variables folded into constants."""
    spec = tf.TensorSpec((1, image_size, image_size, 3), tf.float32, name='images')
    return convert_variables_to_constants_v2(tf.function(call).get_concrete_function(spec))


def calibration_feed(representative, image_size, batch_size=1):
    """The converter's representative_dataset: `batch_size` images per step, from an iterable of image
    batches (NumPy arrays, tensors, or a tf.data.Dataset, whose (images, labels) elements are accepted
    too); images that do not fill a last step are left out. None means random images."""
    if representative is None:
        images = random_images(CALIBRATION_BATCHES * CALIBRATION_BATCH_SIZE, image_size, seed=1)
        representative = np.split(images, CALIBRATION_BATCHES)

    def feed():
        step = []
        for batch in representative:
            if isinstance(batch, (tuple, list)):
                batch = batch[0]
            for image in np.asarray(batch, np.float32):
                step.append(image)
                if len(step) == batch_size:
                    yield [np.stack(step)]
                    step = []
    return feed


def concrete_to_tflite(concrete, feed=None):
    """A constant concrete function as a TFLite flatbuffer (bytes): float32, or with a calibration
    `feed` (see calibration_feed) full-integer int8 with float32 input and output."""
    with quiet_converter():
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
        if feed is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = feed
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()


def keras_to_tflite(model, image_size, int8=False, representative=None):
    """A Keras model's inference, call(images, training=False) at batch 1, as a TFLite flatbuffer;
    int8 is calibrated on `representative` (see calibration_feed)."""
    frozen = frozen_function(lambda images: model(images, training=False), image_size)
    return concrete_to_tflite(frozen, calibration_feed(representative, image_size) if int8 else None)


@contextlib.contextmanager
def quiet_converter():
    """Mutes the TFLite converter's per-model notes. A frozen or constant function holds no variables,
    so the converter needs no trackable object (given one, it first saves a SavedModel, several times
    slower): its absl warning asking for one is noise; and float input and output stay float, so the
    "no statistics for quantized inputs" note is moot."""
    logger = logging.getLogger('absl')  # the TFLite converter logs through absl
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='Statistics for quantized inputs')
            yield
    finally:
        logger.setLevel(level)
