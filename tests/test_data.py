"""Datasets: the digits default, image folders, tfds (always mocked), search split, batches, augmentation."""
import contextlib
import dataclasses
import pathlib
import re
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from ladnas_tf import data

CIFAR10_FOLDER = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'cifar10'


@pytest.fixture(scope='module')
def digits():
    return data.load('digits', 'train'), data.load('digits', 'test')


def _images(dataset, n=None):
    """(images, labels) of the first n (default all) examples as one batch: iterating example by
    example from Python costs more than the pipeline (and a batch far larger than the data stalls
    tf.data's autotuner, so the batch is exactly n)."""
    n = dataset.num_examples if n is None else n
    return next(dataset.ds.take(n).batch(n).as_numpy_iterator())


# ---- the built-in default ----

def test_digits_default_shapes_range_and_classes(digits):
    train, test = digits
    assert (train.num_examples, test.num_examples) == (1437, 360)
    assert train.num_classes == 10 and train.image_size == 16 and train.name == 'digits'
    x, y = _images(test)
    assert x.shape == (360, 16, 16, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert set(y) == set(range(10))
    mean, std = np.array(test.mean), np.array(test.std)
    assert np.all(x >= -mean / std - 1e-5) and np.all(x <= (1 - mean) / std + 1e-5)  # [0, 1], normalised
    assert x.min() < -0.5 and x.max() > 1.0
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # grey repeated to RGB


def test_digits_split_is_deterministic_stratified_and_sized(digits):
    train, _ = digits
    again = data.load('digits', 'train', image_size=32)
    x, y = _images(again, 5)
    assert x.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(y, _images(train, 5)[1])
    from sklearn.datasets import load_digits
    counts = np.bincount(_images(train)[1], minlength=10)
    assert np.abs(counts - 0.8 * np.bincount(load_digits().target)).max() <= 1  # stratified 80%


def test_search_split_halves_are_disjoint_cover_and_deterministic(digits):
    train, _ = digits
    ids = dataclasses.replace(train, records=tf.data.Dataset.zip(  # records that name themselves
        tf.data.Dataset.range(train.num_examples), tf.data.Dataset.range(train.num_examples)))
    ids_of = lambda part: next(part.records.batch(part.num_examples).as_numpy_iterator())[0].tolist()
    weight, arch = data.search_split(ids, train_portion=0.5, seed=0)
    w, a = ids_of(weight), ids_of(arch)
    assert (weight.num_examples, arch.num_examples) == (len(w), len(a)) == (718, 719)
    assert not set(w) & set(a) and sorted(w + a) == list(range(1437))
    assert ids_of(data.search_split(ids, 0.5, seed=0)[0]) == w
    assert ids_of(data.search_split(ids, 0.5, seed=1)[0]) != w
    assert len(ids_of(data.search_split(ids, 0.8)[0])) == 1149
    x, _ = _images(data.search_split(train)[1], 2)  # real halves still decode
    assert x.shape == (2, 16, 16, 3)
    with pytest.raises(data.DataError, match='train_portion'):
        data.search_split(train, 1.0)


# ---- image folders ----

def _write_folder(root, layout, fmt='png'):
    """layout: {split: {class: [(h, w, grey level), ...]}} -> image files under root."""
    for split, classes in layout.items():
        for cls, images in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for k, (h, w, level) in enumerate(images):
                pixels = tf.fill((h, w, 3), tf.constant(level, tf.uint8))
                encoded = tf.io.encode_png(pixels) if fmt == 'png' else tf.io.encode_jpeg(pixels, quality=100)
                (folder / f'{k:03d}.{fmt}').write_bytes(encoded.numpy())
    return root


LAYOUT = {'train': {'dog': [(8, 8, 200)] * 3, 'cat': [(8, 8, 50)] * 2},
          'test': {'dog': [(8, 8, 200)], 'cat': [(8, 8, 50)]}}


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp('pets'), LAYOUT)


def test_folder_loads_with_sorted_classes_and_inferred_size(folder):
    train = data.load('folder', 'train', data_dir=folder)
    assert train.class_names == ('cat', 'dog') and train.num_classes == 2
    assert (train.num_examples, train.image_size) == (5, 8)
    x, y = _images(train)
    assert x.shape == (5, 8, 8, 3) and list(y) == [0, 0, 1, 1, 1]
    raw = x * np.array(train.std) + np.array(train.mean)  # mean/std estimated from train, PNG exact
    np.testing.assert_allclose(raw[y == 0], 50 / 255, atol=1e-5)
    np.testing.assert_allclose(raw[y == 1], 200 / 255, atol=1e-5)
    np.testing.assert_allclose(train.mean, [(2 * 50 + 3 * 200) / 5 / 255] * 3, rtol=1e-5)


def test_folder_by_path_name_resizes_and_shares_train_statistics(folder):
    test = data.load(str(folder), 'test', image_size=16)
    same = data.load(f'folder:{folder}', 'test', image_size=16)
    assert test.num_examples == same.num_examples == 2 and test.image_size == 16
    assert test.mean == data.load('folder', 'train', data_dir=folder).mean
    x, y = _images(test)
    assert x.shape == (2, 16, 16, 3) and list(y) == [0, 1]


def test_folder_reads_jpeg(tmp_path):
    root = _write_folder(tmp_path, {'train': {'a': [(4, 4, 10)], 'b': [(4, 4, 240)]}}, fmt='jpg')
    x, y = _images(data.load(root, 'train'))
    assert x.shape == (2, 4, 4, 3) and list(y) == [0, 1]


def _error(match, *args, **kwargs):
    with pytest.raises(data.DataError, match=match) as caught:
        data.load(*args, **kwargs)
    assert '\n' not in str(caught.value)


def test_folder_errors_are_one_line_and_name_the_problem(tmp_path, folder):
    _error('unknown dataset', 'mnist', 'train')
    _error('needs data_dir', 'folder', 'train')
    _error('does not exist', str(tmp_path / 'nowhere'), 'train')
    (tmp_path / 'file.txt').write_text('x')
    _error('is not a folder', 'folder', 'train', data_dir=tmp_path / 'file.txt')
    (tmp_path / 'empty').mkdir()
    _error('is empty', 'folder', 'train', data_dir=tmp_path / 'empty')
    _error("no split folder 'val'", 'folder', 'val', data_dir=folder)
    _error('image_size must be', 'folder', 'train', data_dir=folder, image_size=0)


def test_folder_layout_errors(tmp_path):
    differ = _write_folder(tmp_path / 'differ', {'train': {'a': [(4, 4, 1)], 'b': [(4, 4, 1)]},
                                                 'test': {'a': [(4, 4, 1)], 'c': [(4, 4, 1)]}})
    _error('class folders differ.*only in train: b; only in test: c', 'folder', 'train', data_dir=differ)
    sizes = _write_folder(tmp_path / 'sizes', {'train': {'a': [(4, 4, 1), (6, 6, 1)], 'b': [(4, 4, 1)]}})
    _error('differ in size.*pass image_size', 'folder', 'train', data_dir=sizes)
    x, _ = _images(data.load(sizes, 'train', image_size=5))
    assert x.shape == (3, 5, 5, 3)
    wide = _write_folder(tmp_path / 'wide', {'train': {'a': [(4, 6, 1)], 'b': [(4, 6, 1)]}})
    _error('not square', 'folder', 'train', data_dir=wide)
    no_images = _write_folder(tmp_path / 'noimg', {'train': {'a': [(4, 4, 1)], 'c': [(4, 4, 1)]}})
    (no_images / 'train' / 'b').mkdir()
    _error('holds no images', 'folder', 'train', data_dir=no_images)
    (tmp_path / 'noclass' / 'train').mkdir(parents=True)
    _error('no class folders', 'folder', 'train', data_dir=tmp_path / 'noclass')
    one = _write_folder(tmp_path / 'one', {'train': {'a': [(4, 4, 1), (4, 4, 2)]}})
    _error('one class folder \\(a\\): a classifier needs at least 2', 'folder', 'train', data_dir=one)


def test_unreadable_files_are_skipped_up_front_with_one_warning(tmp_path, caplog):
    broken = _write_folder(tmp_path / 'broken', {'train': {'a': [(4, 4, 1)], 'b': [(4, 4, 9)]}})
    (broken / 'train' / 'a' / 'zzz.png').write_bytes(b'not an image')
    (broken / 'train' / 'b' / 'empty.jpg').write_bytes(b'')
    with caplog.at_level('WARNING'):
        train = data.load(broken, 'train')
    assert train.num_examples == 2
    warnings = [r for r in caplog.records if 'unreadable' in r.getMessage()]
    assert len(warnings) == 1 and 'skipped 2 unreadable' in warnings[0].getMessage()
    x, y = _images(train, 2)  # every epoch decodes: nothing left to fail on
    assert x.shape == (2, 4, 4, 3)
    only_broken = _write_folder(tmp_path / 'only', {'train': {'a': [(4, 4, 1)]}})
    (only_broken / 'train' / 'b').mkdir()
    (only_broken / 'train' / 'b' / 'x.png').write_bytes(b'\x89PNG broken')
    _error('class folder .*b holds no readable image', 'folder', 'train', data_dir=only_broken)


@pytest.mark.parametrize('fmt,lacking', [('png', 'a PNG without its IEND chunk'),
                                          ('jpg', 'a JPEG without its end-of-image marker')])
def test_an_image_cut_short_is_one_line_naming_it(tmp_path, fmt, lacking):
    """A header intact, the rest cut (an interrupted copy): TensorFlow's decoder would stop mid-epoch
    with its own message naming no file; the load refuses it up front, by name."""
    root = _write_folder(tmp_path / fmt, {'train': {'a': [(16, 16, 1)] * 2, 'b': [(16, 16, 9)] * 2}}, fmt)
    bad = root / 'train' / 'b' / f'001.{fmt}'
    whole = bad.read_bytes()
    bad.write_bytes(whole[:len(whole) * 2 // 3])
    with pytest.raises(tf.errors.InvalidArgumentError):  # what TensorFlow alone does with it
        tf.io.decode_image(bad.read_bytes(), channels=3).numpy()
    _error(f'^image file {re.escape(str(bad))} is cut short: {lacking}; copy it again or remove it$',
           'folder', 'train', data_dir=root)
    assert bad.read_bytes() == whole[:len(whole) * 2 // 3]  # refused, not touched
    (root / 'train' / 'a' / f'000.{fmt}').write_bytes(whole[:-10])  # first in order: named, the other counted
    _error(f'image file .*a/000.{fmt} is cut short: {lacking} \\(and 1 more\\)', 'folder', 'train', data_dir=root)


def test_bytes_after_an_images_end_marker_are_accepted(tmp_path):
    """Some writers pad after IEND or EOI; the decoders ignore that, and so does the check."""
    root = _write_folder(tmp_path / 'jpg', {'train': {'a': [(16, 16, 1)], 'b': [(16, 16, 9)]}}, 'jpg')
    root = _write_folder(root, {'train': {'a': [(16, 16, 1)], 'b': [(16, 16, 9)]}}, 'png')
    for f in (root / 'train' / 'b').iterdir():
        f.write_bytes(f.read_bytes() + b'\0' * 100)
    x, y = _images(data.load(root, 'train'))
    assert x.shape == (4, 16, 16, 3) and sorted(y.tolist()) == [0, 0, 1, 1]


# ---- tensorflow-datasets, always mocked ----

def _refuse_download(*args, **kwargs):
    raise AssertionError('a test tried to download a dataset')


@contextlib.contextmanager
def _mocked_tfds(prepare=_refuse_download):
    """tfds.testing.mock_data with download_and_prepare replaced; the patch nests inside the mock so
    both are undone in order and nothing leaks into later tests."""
    tfds = pytest.importorskip('tensorflow_datasets')
    with tfds.testing.mock_data(num_examples=6), \
            mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare', prepare):
        yield


@pytest.fixture
def tfds_mock():
    with _mocked_tfds():
        yield


@pytest.fixture
def tfds_mock_prepared():
    with _mocked_tfds(prepare=lambda *args, **kwargs: None):
        yield


def test_tfds_cifar10_under_mock_data(tfds_mock_prepared, tmp_path):
    train = data.load('cifar10', 'train', data_dir=tmp_path)
    assert (train.num_examples, train.num_classes, train.image_size) == (6, 10, 32)
    assert train.mean == data.MEAN_STD['cifar10'][0]
    x, y = _images(train)
    assert x.shape == (6, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert [b[0].shape[0] for b in data.batches(train, 4, training=False)] == [4, 2]
    with pytest.raises(data.DataError, match="no split 'val'"):
        data.load('cifar10', 'val', data_dir=tmp_path)


def test_tfds_without_download_fails_in_one_line(tfds_mock, tmp_path):
    _error('not prepared.*download is off', 'cifar10', 'test', data_dir=tmp_path, download=False)


def test_imagenet_without_manual_download_names_where_the_tars_go(tfds_mock, tmp_path):
    manual = tmp_path / 'downloads' / 'manual'
    _error(f'put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar .* in {manual}$',
           'imagenet2012', 'train', data_dir=tmp_path)
    manual.mkdir(parents=True)
    (manual / 'ILSVRC2012_img_train.tar').write_bytes(b'')
    _error('put ILSVRC2012_img_val.tar ', 'imagenet2012', 'train', data_dir=tmp_path)


def test_imagenet_with_manual_download_under_mock_data(tfds_mock_prepared, tmp_path):
    manual = tmp_path / 'downloads' / 'manual'
    manual.mkdir(parents=True)
    for tar in data.IMAGENET_TARS:
        (manual / tar).write_bytes(b'')
    val = data.load('imagenet2012', 'test', data_dir=tmp_path, image_size=16)  # ImageNet's validation
    assert (val.num_examples, val.num_classes, val.split) == (6, 1000, 'test')
    x, y = _images(val, 2)
    assert x.shape == (2, 16, 16, 3) and y.dtype == np.int32


# ---- batches and augmentation ----

def test_training_batches_are_augmented_seeded_and_drop_the_remainder(digits):
    train, test = digits
    first = lambda seed: next(iter(data.batches(train, 64, training=True, seed=seed, cutout=4)))
    x, y = first(3)
    assert x.shape == (64, 16, 16, 3) and x.dtype == tf.float32 and y.dtype == tf.int32
    np.testing.assert_array_equal(x, first(3)[0])
    assert not np.array_equal(y, first(4)[1])
    sizes = [int(b[0].shape[0]) for b in data.batches(train, 500, training=True, seed=0)]
    assert sizes == [500, 500]
    plain = next(iter(data.batches(test, 360, training=False)))[0].numpy()
    np.testing.assert_allclose(plain, _images(test)[0])
    assert [int(b[0].shape[0]) for b in data.batches(test, 100, training=False)] == [100, 100, 100, 60]
    repeated = data.batches(test, 100, training=True, seed=0, augment=None, repeat=True)
    assert len(list(repeated.take(7))) == 7


def test_batches_refuse_bad_arguments(digits):
    _, test = digits
    with pytest.raises(data.DataError, match='batch size 361 is larger than digits test \\(360 examples\\)'):
        data.batches(test, 361, training=True)
    with pytest.raises(data.DataError, match='positive int'):
        data.batches(test, 0, training=False)
    with pytest.raises(data.DataError, match='unknown augmentation'):
        data.batches(test, 8, training=True, augment='rotate')
    with pytest.raises(data.DataError, match='ImageNet training view needs encoded image files'):
        data.batches(test, 8, training=True, augment='imagenet')


def test_random_crop_flip_is_a_shifted_window_of_the_zero_padded_image():
    images = tf.reshape(tf.range(1, 1 + 6 * 6 * 6 * 1, dtype=tf.float32), (6, 6, 6, 1))
    out = data.random_crop_flip(images, seed=7, padding=2).numpy()
    padded = np.pad(images.numpy(), ((0, 0), (2, 2), (2, 2), (0, 0)))
    windows = lambda p: [w for oy in range(5) for ox in range(5) for w in
                         (p[oy:oy + 6, ox:ox + 6], p[oy:oy + 6, ox:ox + 6][:, ::-1])]
    for k in range(6):
        assert any(np.array_equal(out[k], w) for w in windows(padded[k]))
    np.testing.assert_array_equal(out, data.random_crop_flip(images, seed=7, padding=2))
    assert not np.array_equal(out, data.random_crop_flip(images, seed=8, padding=2))
    assert data.random_crop_flip(images[0], seed=7).shape == (6, 6, 1)  # one image works too


def test_cutout_zeroes_a_square_of_the_given_length():
    images = tf.ones((40, 32, 32, 3))
    out = data.cutout(images, 8, seed=11).numpy()
    full_squares = 0
    for image in out:
        zero = image[..., 0] == 0
        assert (zero == (image == 0).all(-1)).all()            # every channel alike
        rows, cols = np.flatnonzero(zero.any(1)), np.flatnonzero(zero.any(0))
        assert 4 <= len(rows) <= 8 and 4 <= len(cols) <= 8     # clipped at most to half
        assert zero.sum() == len(rows) * len(cols)             # a solid rectangle
        assert np.ptp(rows) == len(rows) - 1 and np.ptp(cols) == len(cols) - 1
        full_squares += zero.sum() == 64
    assert full_squares > 10
    assert (out != 0).sum() == (out == 1).sum()               # nothing else touched
    single = data.cutout(tf.ones((16, 16, 1)), 4, seed=tf.constant([1, 2])).numpy()
    assert single.shape == (16, 16, 1) and 4 <= (single == 0).sum() <= 16


# ---- the project's CIFAR-10 copy ----

@pytest.mark.slow
@pytest.mark.skipif(not CIFAR10_FOLDER.is_dir(), reason=f'{CIFAR10_FOLDER} is not there')
def test_real_cifar10_folder():
    train = data.load(str(CIFAR10_FOLDER), 'train')
    test = data.load('folder', 'test', data_dir=CIFAR10_FOLDER, image_size=32)
    assert (train.num_examples, test.num_examples) == (50_000, 10_000)
    assert train.num_classes == test.num_classes == 10 and train.image_size == 32
    assert train.class_names == data.CIFAR10_CLASSES and train.mean == data.MEAN_STD['cifar10'][0]
    for x, y in data.batches(train, 32, training=True, seed=0, cutout=16).take(2):
        assert x.shape == (32, 32, 32, 3) and y.shape == (32,)
        assert -2.5 < float(tf.reduce_min(x)) and float(tf.reduce_max(x)) < 2.5
