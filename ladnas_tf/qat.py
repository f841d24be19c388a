"""Quantization-aware training (QAT) of a trained evaluation network into an int8 TFLite file.

tensorflow-model-optimization (tfmot) wraps only tf_keras (Keras 2) layers; our networks are Keras 3.
Rather than a second copy of the network code, the network is rebuilt for tf_keras by the genotype
walk that also builds the Keras network and the profiler's graph (graph/walk.py), through an emitter
whose primitives are
standard tf_keras layers (Conv2D, DepthwiseConv2D, BatchNormalization, ReLU, pooling, ZeroPadding2D,
Cropping2D, Add, Concatenate, Dense). The walk meets the weighted layers in the order the Keras
network lists them (its weighted_layers), so the trained weights (BN moving statistics included; the
auxiliary head is not part of inference) are copied across one layer for one layer, kinds and shapes
checked.

Then: quantize_model (fake quantization of weights and activations), a short fine-tune with the
run's own augmentation, conversion to a full-integer TFLite file (float input and output, as
export.py's post-training int8) and its top-1 through the TFLite interpreter.
"""
import math
import os
import time

import keras
import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras

from ladnas_tf import data, ops, run_dir, train
from ladnas_tf.bad_input import BadInput
from ladnas_tf.graph import convert, walk

PARITY_TOLERANCE = 1e-4  # largest |tf_keras - Keras| logit over the largest |Keras| logit
_KINDS = {'Conv2D': 'conv', 'DepthwiseConv2D': 'depthwise', 'BatchNormalization': 'bn', 'Dense': 'dense'}


class QATError(BadInput):
    """A network or dataset QAT cannot work with; the message is one line naming the problem."""


class _OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Fake-quantizes a layer's output only: for the BN after FactorizedReduce's concatenation, which
    has no conv to fold into (tfmot supports BN only right after a conv) and runs as int8 MUL, ADD."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {}


class _TfKerasEmitter(walk.Walk):
    """The walk as a functional tf_keras graph; `weighted` lists the layers with weights in walk order."""

    def __init__(self):
        self.layers = tf_keras.layers
        self.weighted = []
        self._conv_outputs = set()  # ids of conv outputs: a BN reading one folds into that conv

    def _weighted(self, layer, x):
        self.weighted.append(layer)
        return layer(x)

    def conv(self, x, filters, k, stride=1, dilation=1, depthwise=False):
        """ops.conv_layers in tf_keras: explicit symmetric padding for a strided conv; a strided
        dilated conv is the stride-1 conv, then every second pixel."""
        strided = stride > 1 and dilation == 1
        pad = dilation * (k - 1) // 2
        if strided and pad:
            x = self.layers.ZeroPadding2D(pad)(x)
        kwargs = dict(kernel_size=k, strides=stride if strided else 1, dilation_rate=dilation,
                      padding='valid' if strided else 'same', use_bias=False)
        layer = (self.layers.DepthwiseConv2D(**kwargs) if depthwise
                 else self.layers.Conv2D(filters, **kwargs))
        y = self._weighted(layer, x)
        self._conv_outputs.add(id(y))
        return self._subsample(y, stride) if stride > 1 and dilation > 1 else y

    def _subsample(self, x, stride):
        # ops.Subsample as a standard layer tfmot knows: a 1x1 max pool keeps pixel (s*i, s*j).
        return self.layers.MaxPooling2D(pool_size=1, strides=stride)(x)

    def bn(self, x):
        layer = self.layers.BatchNormalization(momentum=ops.BN_MOMENTUM, epsilon=ops.BN_EPSILON)
        if id(x) in self._conv_outputs:
            return self._weighted(layer, x)
        annotated = tfmot.quantization.keras.quantize_annotate_layer(layer, _OutputQuantizeConfig())
        y = annotated(x)
        self.weighted.append(layer)
        return y

    def relu(self, x):
        return self.layers.ReLU()(x)

    def pool(self, x, kind, stride):
        pool = self.layers.MaxPooling2D if kind == 'max' else self.layers.AveragePooling2D
        y = pool(3, strides=1, padding='same')(x)  # 'same' average pooling excludes the padding
        return self._subsample(y, stride) if stride > 1 else y

    def shift(self, x):
        return self.layers.Cropping2D(((1, 0), (1, 0)))(x)

    def add(self, xs):
        return self.layers.Add()(list(xs))

    def concat(self, xs):
        return self.layers.Concatenate()(xs)

    def classifier(self, x, num_classes):
        return self._weighted(self.layers.Dense(num_classes), self.layers.GlobalAveragePooling2D()(x))


def _copy_weights(sources, targets):
    if len(sources) != len(targets):
        raise QATError(f'the Keras network has {len(sources)} weighted layers, its genotype\'s walk '
                       f'{len(targets)}: they do not describe the same network')
    for k, (source, target) in enumerate(zip(sources, targets)):
        weights = source.get_weights()
        shapes = [w.shape for w in weights], [tuple(w.shape) for w in target.weights]
        if _KINDS[type(source).__name__] != _KINDS[type(target).__name__] or shapes[0] != shapes[1]:
            raise QATError(f'weighted layer {k}: Keras {type(source).__name__} {shapes[0]} does not '
                           f'match tf_keras {type(target).__name__} {shapes[1]}')
        target.set_weights(weights)


def rebuild(model):
    """A functional tf_keras model computing what `model` (a built evaluation network) computes in
    inference, with its trained weights."""
    emitter = _TfKerasEmitter()
    inputs = tf_keras.Input((model.image_size, model.image_size, 3), name='images')
    logits = emitter.network(inputs, model.genotype, model.setting, model.channels, model.num_cells,
                             model.num_classes, model.image_size)
    rebuilt = tf_keras.Model(inputs, logits, name='tf_keras_' + model.name)
    _copy_weights(model.weighted_layers(), emitter.weighted)
    return rebuilt


def parity(model, rebuilt, images):
    """Largest |tf_keras - Keras| logit over the largest |Keras| logit, both in inference."""
    expected = np.asarray(model(images, training=False))
    got = np.asarray(rebuilt(images, training=False))
    scale = float(np.abs(expected).max())
    return float(np.abs(got - expected).max()) / (scale or 1.0)


def quantize(rebuilt):
    """tfmot's default 8-bit QAT wrapping (fake quantization of weights and activations)."""
    with tfmot.quantization.keras.quantize_scope({'_OutputQuantizeConfig': _OutputQuantizeConfig}):
        return tfmot.quantization.keras.quantize_model(rebuilt)


def fine_tune(qmodel, train_set, recipe, epochs, learning_rate, verbose=0, log=print):
    """`epochs` of momentum SGD, the rate cosine-annealed from learning_rate to 0, global-norm
    clipping and label smoothing as in the recipe, on the recipe's augmented batches (seeded after
    the run's own epochs, so QAT sees fresh shuffles). Returns the final epoch's mean loss."""
    steps = train_set.num_examples // recipe.batch_size
    schedule = tf_keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps)
    qmodel.compile(
        optimizer=tf_keras.optimizers.SGD(schedule, momentum=recipe.momentum,
                                          global_clipnorm=recipe.grad_clip or None),
        loss=lambda labels, logits: train.classification_loss(
            labels, logits, label_smoothing=recipe.label_smoothing))
    loss = math.nan
    for epoch in range(epochs):
        batches = train.training_batches(train_set, recipe, recipe.epochs + epoch)
        loss = qmodel.fit(batches, epochs=1, verbose=verbose).history['loss'][-1]
        log(f'QAT epoch {epoch + 1}/{epochs}: loss {loss:.4f}')
    return float(loss)


def qat_to_tflite(qmodel, representative):
    """The fine-tuned QAT model as a full-integer TFLite flatbuffer (float input and output), converted
    as export.py's int8. The fake-quant ranges learned in training quantize nearly every tensor;
    `representative` (images, N x H x W x 3) calibrates the few that tfmot leaves in float (the BN
    after a concatenation), so no op falls back to float."""
    image_size = qmodel.input_shape[1]
    check_representative(representative, image_size)
    frozen = convert.frozen_function(lambda images: qmodel(images, training=False), image_size)
    return convert.concrete_to_tflite(frozen, convert.calibration_feed([representative], image_size))


def check_representative(images, image_size):
    shape = np.shape(images)
    if len(shape) != 4 or shape[0] < 1 or tuple(shape[1:]) != (image_size, image_size, 3):
        raise QATError(f'representative images must be N x {image_size} x {image_size} x 3 '
                       f'(N >= 1), got shape {tuple(shape)}')


def check_inputs(model, train_set, test_set, recipe, epochs, learning_rate):
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise QATError(f'QAT needs at least one epoch of fine-tuning (its activation ranges are '
                       f'learned), got epochs={epochs!r}')
    if not learning_rate > 0:
        raise QATError(f'learning_rate must be positive, got {learning_rate}')
    for split in (train_set, test_set):
        if split.image_size != model.image_size:
            raise QATError(f'{split.name} {split.split} images are {split.image_size}x{split.image_size}, '
                           f'the network takes {model.image_size}x{model.image_size}')
        if split.num_classes != model.num_classes:
            raise QATError(f'{split.name} has {split.num_classes} classes, the network '
                           f'{model.num_classes}')
    if train_set.num_examples < recipe.batch_size:
        raise QATError(f'batch size {recipe.batch_size} is larger than {train_set.name} train '
                       f'({train_set.num_examples} examples)')


def quantization_aware_training(model, train_set, test_set, recipe, epochs=1, learning_rate=None,
                                calibration_images=256, eval_limit=None, verbose=0, log=print):
    """(int8 TFLite bytes, summary) of QAT on a trained Keras evaluation network.

    train_set/test_set are data.Datasets; recipe is the run's train.Recipe (batch size, momentum,
    clipping, augmentation, seed); learning_rate defaults to a hundredth of the recipe's peak rate.
    Give it epochs: tfmot's activation ranges start at +-6 and follow the data by an EMA of decay
    0.999, so one epoch of ~800 steps still carries 45% of the start (measured effects of both
    choices: docs/notes_measured.md)."""
    learning_rate = recipe.learning_rate / 100 if learning_rate is None else learning_rate
    check_inputs(model, train_set, test_set, recipe, epochs, learning_rate)
    start = time.perf_counter()
    rebuilt = rebuild(model)
    diff = parity(model, rebuilt, convert.random_images(4, model.image_size))
    if diff > PARITY_TOLERANCE:
        raise QATError(f'the tf_keras rebuild differs from the Keras network by {diff:.2e} of the '
                       f'logit scale (tolerance {PARITY_TOLERANCE:.0e})')
    rebuild_seconds = time.perf_counter() - start
    qmodel = quantize(rebuilt)
    start = time.perf_counter()
    loss = fine_tune(qmodel, train_set, recipe, epochs, learning_rate, verbose, log)
    fine_tune_seconds = time.perf_counter() - start
    keras_top1 = _keras_top1(qmodel, test_set, recipe.batch_size)
    start = time.perf_counter()
    representative = train.representative_images(train_set, calibration_images, model.image_size)
    tflite_bytes = qat_to_tflite(qmodel, representative)
    conversion_seconds = time.perf_counter() - start
    top1 = train.tflite_accuracy(tflite_bytes, test_set, eval_limit)
    summary = {'file_bytes': len(tflite_bytes), 'test_top1': top1, 'qat_keras_test_top1': keras_top1,
               'epochs': epochs, 'learning_rate': learning_rate, 'final_loss': loss,
               'rebuild_parity': diff, 'rebuild_seconds': round(rebuild_seconds, 2),
               'fine_tune_seconds': round(fine_tune_seconds, 2),
               'conversion_seconds': round(conversion_seconds, 2),
               'tflite_eval_examples': test_set.num_examples if eval_limit is None
               else min(eval_limit, test_set.num_examples)}
    return tflite_bytes, summary


OUTPUT = 'model_int8_qat.tflite'  # beside the run's own files


def _run_json(model_dir, name):
    path = os.path.join(model_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path} does not exist (is {model_dir} a finished tools.train run?)')
    return run_dir.read_json(path)


def quantize_run(model_dir, checkpoint='final', epochs=1, learning_rate=None, data_dir=None, calibration_images=256,
                 eval_limit=None, latency_runs=50, threads=1, overwrite=False, verbose=0, log=print):
    """QAT of a finished train.train run directory (its run_config.json and final.keras, or best.keras):
    writes model_int8_qat.tflite into it and adds "qat" to its summary.json, keeping everything already
    there; with latency_runs, every TFLite file of the run is timed on this CPU (cpu_tflite, as the
    profiler times a table row, bracketed by the run's float32 file when it has one). Returns the summary."""
    from ladnas_tf.profiling import agent, profiler
    from ladnas_tf.profiling.targets import local
    config, summary = _run_json(model_dir, train.RUN_CONFIG), _run_json(model_dir, train.SUMMARY)
    output = os.path.join(model_dir, OUTPUT)
    if (os.path.exists(output) or 'qat' in summary) and not overwrite:
        raise FileExistsError(f'{output} or its summary entry exists (pass --overwrite to replace them)')
    model_path = os.path.join(model_dir, f'{checkpoint}.keras')
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f'{model_path} does not exist (is {model_dir} a finished tools.train run?)')
    recipe = train.Recipe(**config['recipe'])
    train_set, test_set = (data.load(config['dataset'], split, data_dir, recipe.image_size)
                           for split in ('train', 'test'))
    tflite_bytes, result = quantization_aware_training(
        keras.models.load_model(model_path), train_set, test_set, recipe, epochs, learning_rate, calibration_images,
        eval_limit, verbose, log)
    result = {'file': OUTPUT, 'checkpoint': checkpoint, **result}
    summary = _run_json(model_dir, train.SUMMARY)  # afresh: keep whatever was added meanwhile
    todo, reference = {'int8_qat': (tflite_bytes, result)}, None
    for name, entry in summary.get('tflite', {}).items():  # the run's other TFLite files, timed alike
        path = os.path.join(model_dir, entry.get('file', ''))
        if os.path.isfile(path):
            with open(path, 'rb') as f:
                content = f.read()
            reference = content if name == 'float32' else reference
            if 'cpu_latency' not in entry or overwrite:
                todo[name] = (content, entry)
    if latency_runs:
        timed = profiler.time_files(local.CpuTFLite(threads), {n: c for n, (c, _) in todo.items()},
                                    runs=latency_runs, reference=reference)
        for name, (_, entry) in todo.items():
            entry['cpu_latency'] = {**timed[name], 'threads': threads, 'device': agent.cpu_model()}
    run_dir.write_bytes(output, tflite_bytes)
    summary['qat'] = result
    train.write_summary(model_dir, summary)
    return summary


def _keras_top1(qmodel, test_set, batch_size):
    """Top-1 (percent) of the fake-quantized model itself, before conversion."""
    correct = 0
    for images, labels in data.batches(test_set, min(batch_size, test_set.num_examples), training=False):
        logits = qmodel(images, training=False)
        correct += int(np.sum(np.argmax(logits, -1) == labels.numpy()))
    return 100 * correct / test_set.num_examples
