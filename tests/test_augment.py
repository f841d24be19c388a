"""The ImageNet training view (augment.py) and ImageNet folders (data.py): shapes, value ranges,
determinism per (seed, example), crop statistics against torchvision's documented sampling, the
evaluation view, and one-line errors for a folder without the expected layout. JPEGs made here."""
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from ladnas_tf import augment, data

SIZES = [(60, 40), (50, 90), (64, 64), (80, 120), (33, 47), (100, 75)]  # (h, w): landscape, portrait, square


def _image(h, w, seed):
    """A smooth colour image (JPEG-friendly), distinct per seed."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    channels = [np.sin(2 * math.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y + rng.uniform()))
                for _ in range(3)]
    return (127.5 + 120 * np.stack(channels, -1)).astype(np.uint8)


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    """An ImageNet folder as DARTS reads it: train/<class>/, val/<class>/, JPEGs (and a PNG) of mixed sizes."""
    root = tmp_path_factory.mktemp('imagenet')
    for split, count in (('train', 6), ('val', 2)):
        for c, cls in enumerate(('n01440764', 'n01443537')):
            os.makedirs(root / split / cls)
            for i in range(count):
                h, w = SIZES[(i + c) % len(SIZES)]
                pixels = tf.constant(_image(h, w, 10 * c + i))
                encoded = tf.io.encode_png(pixels) if i == 5 else tf.io.encode_jpeg(pixels, quality=95)
                (root / split / cls / f'{i}.{"png" if i == 5 else "JPEG"}').write_bytes(encoded.numpy())
    return str(root)


def _all(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


# ---- the pipeline ----

def test_training_view_shapes_ranges_and_labels(imagenet):
    train = data.load('imagenet_folder', 'train', imagenet, image_size=32)
    assert (train.num_examples, train.num_classes, train.image_size) == (12, 2, 32)
    (x, y), = _all(data.batches(train, 12, training=True, seed=0, augment='imagenet'))
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.float32 and sorted(y) == [0] * 6 + [1] * 6
    raw = x * np.array(train.std) + np.array(train.mean)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5 and raw.std() > 0.05


def test_training_view_is_a_function_of_seed_and_example(imagenet):
    train = data.load('imagenet_folder', 'train', imagenet, image_size=32)
    views = lambda seed: _all(data.batches(train, 4, training=True, seed=seed, augment='imagenet'))
    first, again, other = views(5), views(5), views(6)
    for (a, _), (b, _) in zip(first, again):
        np.testing.assert_array_equal(a, b)  # parallel map and all: the same batches
    assert not np.allclose(np.concatenate([a for a, _ in first]), np.concatenate([a for a, _ in other]))
    # Each output is the view of its own (seed, index), whatever the shuffle put it: resumable anywhere.
    encoded = [tf.io.read_file(f) for f, _ in train.records.as_numpy_iterator()]
    expected = [train.normalize(augment.imagenet_train_view(e, tf.constant([5, i], tf.int64), 32)).numpy()
                for i, e in enumerate(encoded)]
    for image in np.concatenate([a for a, _ in first]):
        assert min(np.abs(image - e).max() for e in expected) < 1e-5


def test_evaluation_view_is_resize_256_centre_crop_224(imagenet):
    val = data.load('imagenet_folder', 'test', imagenet)
    assert val.split == 'test' and val.num_examples == 4 and val.image_size == 224
    (x, _), = _all(data.batches(val, 4, training=False))
    assert x.shape == (4, 224, 224, 3)
    # Deterministic, and the centre of the image: a 64x64 image scaled to 256, the middle 224.
    image = _image(64, 64, 0)
    view, _ = data._imagenet_decoder(224)(tf.io.encode_png(tf.constant(image)), 0)
    full = tf.image.resize(tf.image.convert_image_dtype(tf.constant(image), tf.float32), (256, 256))
    np.testing.assert_allclose(view.numpy(), np.clip(full[16:240, 16:240].numpy(), 0, 1), atol=1e-5)


def test_folder_without_the_expected_layout_is_one_line(imagenet, tmp_path, run_tool):
    os.makedirs(tmp_path / 'only_train' / 'train' / 'a')
    with pytest.raises(data.DataError, match=r'lacks val/ \(expected .*/train/<class>/\*\.JPEG'):
        data.load('imagenet_folder', 'train', str(tmp_path / 'only_train'))
    os.makedirs(tmp_path / 'mismatch' / 'val' / 'b')
    os.makedirs(tmp_path / 'mismatch' / 'train' / 'a')
    with pytest.raises(data.DataError, match='not the same classes'):
        data.load(f'imagenet_folder:{tmp_path / "mismatch"}', 'train')
    with pytest.raises(data.DataError, match='does not exist'):
        data.load('imagenet_folder', 'train', str(tmp_path / 'nowhere'))
    model_dir = tmp_path / 'run'
    result = run_tool('train', '--genotype=DARTS_V2', f'--model_dir={model_dir}',
                      f'--dataset=imagenet_folder:{tmp_path / "only_train"}', '--setting=imagenet',
                      env={'TF_CPP_MIN_LOG_LEVEL': '2'}, timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'lacks val/' in lines[0]
    assert not model_dir.exists()


# ---- the sampling, against torchvision's documented algorithm ----

def _torchvision_windows(height, width, n, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """RandomResizedCrop.get_params as torchvision documents and implements it, in NumPy."""
    out = []
    for _ in range(n):
        for _ in range(10):
            target = height * width * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                out.append((rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w))
                break
        else:
            in_ratio = width / height
            w, h = ((width, int(round(width / ratio[0]))) if in_ratio < ratio[0] else
                    (int(round(height * ratio[1])), height) if in_ratio > ratio[1] else (width, height))
            out.append(((height - h) // 2, (width - w) // 2, h, w))
    return np.array(out)


def _our_windows(height, width, n, seed=3):
    fn = lambda i: tf.stack(augment.crop_window(height, width, tf.stack([tf.constant(seed, tf.int64), i])))
    return next(iter(tf.data.Dataset.range(n).map(fn).batch(n))).numpy()


@pytest.mark.parametrize('height,width', [(300, 400), (256, 256), (500, 200)])
def test_crop_scale_and_ratio_follow_torchvision(height, width):
    n = 4000
    ours, theirs = _our_windows(height, width, n), _torchvision_windows(height, width, n, np.random.default_rng(0))
    for windows in (ours, theirs):
        top, left, h, w = windows.T
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    area = lambda win: win[:, 2] * win[:, 3] / (height * width)
    log_ratio = lambda win: np.log(win[:, 3] / win[:, 2])
    # The documented ranges (up to rounding to whole pixels) ...
    assert area(ours).min() > 0.075 and area(ours).max() <= 1.0
    assert np.exp(log_ratio(ours)).min() > 0.74 and np.exp(log_ratio(ours)).max() < 1.35
    # ... and the same distributions (two-sample Kolmogorov-Smirnov), placements included.
    for stat in (area, log_ratio, lambda win: win[:, 0] / height, lambda win: win[:, 1] / width):
        assert stats.ks_2samp(stat(ours), stat(theirs)).pvalue > 1e-3


def test_crop_falls_back_to_the_centre_as_torchvision():
    """A 20x400 strip: no window of ratio <= 4/3 and area >= 8% fits, so every crop is the centred fallback."""
    ours = _our_windows(20, 400, 200)
    theirs = _torchvision_windows(20, 400, 200, np.random.default_rng(1))
    np.testing.assert_array_equal(np.unique(ours, axis=0), np.unique(theirs, axis=0))
    assert np.unique(ours, axis=0).tolist() == [[0, (400 - 27) // 2, 20, 27]]


# ---- colour jitter ----

def test_color_jitter_factors_and_ranges():
    image = tf.image.convert_image_dtype(tf.constant(_image(16, 16, 1)), tf.float32)
    seeds = [tf.constant([0, i], tf.int64) for i in range(20)]
    for seed in seeds[:3]:
        np.testing.assert_allclose(augment.color_jitter(image, seed, 0, 0, 0, 0).numpy(), image.numpy(), atol=1e-6)
    factors = []
    for seed in seeds:  # brightness alone: a blend with black, one factor in [0.6, 1.4] per image
        out = augment.color_jitter(image * 0.5, seed, 0.4, 0, 0, 0).numpy()
        factors.append(np.median(out / (image.numpy() * 0.5 + 1e-6)))
    assert 0.6 <= min(factors) < 0.9 and 1.1 < max(factors) <= 1.4
    for seed in seeds:
        out = augment.color_jitter(image, seed).numpy()
        assert out.min() >= 0 and out.max() <= 1
    grey = tf.fill((4, 4, 3), 0.5)  # saturation and hue leave a grey image grey
    np.testing.assert_allclose(augment.color_jitter(grey, seeds[0], 0, 0, 0.4, 0.2).numpy(), 0.5, atol=1e-5)
