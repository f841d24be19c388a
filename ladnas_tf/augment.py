"""The ImageNet training view of DARTS and PC-DARTS (train_imagenet.py in both): torchvision's
RandomResizedCrop(224), RandomHorizontalFlip() and ColorJitter(0.4, 0.4, 0.4, 0.2), one example at a
time, with stateless random ops: an example's view depends only on its [2] seed, so a resumed run
(or a second worker) sees exactly the views an uninterrupted run would.

Sampling follows torchvision (transforms.RandomResizedCrop.get_params): up to 10 attempts of an area
fraction s ~ U(0.08, 1) and an aspect ratio r = exp(U(log 3/4, log 4/3)), w = round(sqrt(s r A)),
h = round(sqrt(s A / r)); the first attempt that fits is placed uniformly, else a centre crop with
the ratio clamped to [3/4, 4/3]. The crop is resized bilinearly with antialiasing (PIL's bilinear
resize, which DARTS's PIL images get). ColorJitter draws brightness, contrast and saturation factors
from U(0.6, 1.4) and a hue shift from U(-0.2, 0.2) and applies the four in a random order, each as
torchvision's functional ops do (blend with black, the grey mean, the grey image; a hue rotation).
Pixels stay floats between the ops (PIL rounds to uint8 after each), a difference far below the noise
of the augmentation itself.
"""
import math

import tensorflow as tf

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
ATTEMPTS = 10
JITTER = {'brightness': 0.4, 'contrast': 0.4, 'saturation': 0.4, 'hue': 0.2}
GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def _split(seed, n):
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n))


def crop_window(height, width, seed, scale=SCALE, ratio=RATIO, attempts=ATTEMPTS):
    """(top, left, h, w) int32 of torchvision's RandomResizedCrop on a height x width image.

    All attempts are drawn at once and the first that fits is taken, which is the same distribution
    as torchvision's loop that stops at the first fit."""
    area_seed, ratio_seed, top_seed, left_seed = _split(seed, 4)
    height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = height_f * width_f
    target = area * tf.random.stateless_uniform([attempts], area_seed, scale[0], scale[1])
    aspect = tf.exp(tf.random.stateless_uniform([attempts], ratio_seed, math.log(ratio[0]), math.log(ratio[1])))
    w = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)  # tf.round is half-to-even, as Python's round
    h = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32))  # index of the first fit (0 when none fits)
    # The fallback: the whole image, its ratio clamped to [ratio[0], ratio[1]], centred.
    in_ratio = width_f / height_f
    fallback_w = tf.where(in_ratio > ratio[1], tf.cast(tf.round(height_f * ratio[1]), tf.int32), width)
    fallback_h = tf.where(in_ratio < ratio[0], tf.cast(tf.round(width_f / ratio[0]), tf.int32), height)
    found = tf.reduce_any(fits)
    crop_h = tf.where(found, h[first], fallback_h)
    crop_w = tf.where(found, w[first], fallback_w)
    # torch.randint(0, n + 1): uniform over the n + 1 placements; the fallback is centred.
    offset = lambda s, room: tf.minimum(tf.cast(tf.floor(
        tf.random.stateless_uniform([], s) * tf.cast(room + 1, tf.float32)), tf.int32), room)
    top = tf.where(found, offset(top_seed, height - crop_h), (height - crop_h) // 2)
    left = tf.where(found, offset(left_seed, width - crop_w), (width - crop_w) // 2)
    return top, left, crop_h, crop_w


def decode_crop(encoded, seed):
    """The RandomResizedCrop window of an encoded image, decoded (uint8 [h, w, 3]). JPEGs decode only
    the window (decode_and_crop_jpeg: most of the pixels of a small crop are never decoded)."""
    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        window = tf.stack(crop_window(shape[0], shape[1], seed))
        return tf.image.decode_and_crop_jpeg(encoded, window, channels=3)

    def other():
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        top, left, h, w = crop_window(tf.shape(image)[0], tf.shape(image)[1], seed)
        return image[top:top + h, left:left + w]
    return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def _grey(image):
    return tf.reduce_sum(image * tf.constant(GREY, image.dtype), axis=-1, keepdims=True)


def _blend(image, other, factor):
    return tf.clip_by_value(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def color_jitter(image, seed, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2):
    """torchvision's ColorJitter on a float image in [0, 1]: four factors, applied in a random order."""
    order_seed, b_seed, c_seed, s_seed, h_seed = _split(seed, 5)
    factor = lambda s, spread: tf.random.stateless_uniform([], s, 1.0 - spread, 1.0 + spread)
    b, c, s = factor(b_seed, brightness), factor(c_seed, contrast), factor(s_seed, saturation)
    h = tf.random.stateless_uniform([], h_seed, -hue, hue)
    ops = [lambda x: _blend(x, tf.zeros_like(x), b),
           lambda x: _blend(x, tf.reduce_mean(_grey(x)), c),
           lambda x: _blend(x, _grey(x), s),
           lambda x: tf.image.adjust_hue(x, h)]
    order = tf.argsort(tf.random.stateless_uniform([4], order_seed))  # a uniform permutation, as randperm
    for position in range(4):
        branches = [lambda op=op, x=image: op(x) for op in ops]
        image = tf.ensure_shape(tf.switch_case(order[position], branches), image.shape)
    return image


def imagenet_train_view(encoded, seed, size=224, jitter=JITTER):
    """One training example: an encoded image -> float32 [size, size, 3] in [0, 1]
    (random-resized crop, horizontal flip with probability 1/2, colour jitter)."""
    crop_seed, flip_seed, jitter_seed = _split(seed, 3)
    crop = tf.image.convert_image_dtype(decode_crop(encoded, crop_seed), tf.float32)
    image = tf.image.resize(crop, (size, size), method='bilinear', antialias=True)
    image = tf.clip_by_value(image, 0.0, 1.0)  # antialiasing can overshoot slightly
    image = tf.where(tf.random.stateless_uniform([], flip_seed) < 0.5, tf.reverse(image, axis=[1]), image)
    image = tf.ensure_shape(image, (size, size, 3))
    return color_jitter(image, jitter_seed, **jitter) if jitter else image
