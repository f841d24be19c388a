"""Image datasets as tf.data pipelines: the built-in digits default, CIFAR-10 and ImageNet through
tfds, ImageNet as DARTS reads it (<root>/train|val/<class>/), and image folders; DARTS's search split
(train_portion), the held-out validation split, CIFAR augmentation and cutout, and the ImageNet
training view (augment.py).

Every dataset yields (image, label): an HWC float32 image normalised with the dataset's mean/std
and an int32 label. A Dataset keeps its examples as cheap *records* (file paths, encoded bytes or
small arrays) plus a decode function, so shuffling and the search split act on records and each
image is decoded once per pass. Decoding stops at raw pixels; conversion, augmentation and
normalisation run on whole batches, because per-image TensorFlow ops cost more than the decoding.
ImageNet's training view is the exception: its random-resized crop needs each image whole, so it runs
per example (in parallel), seeded by (seed, example index) so that it does not depend on the order.
"""
import dataclasses
import io
import os
import struct
from typing import Callable

import numpy as np
import tensorflow as tf
from absl import logging as absl_logging

from ladnas_tf import augment as augment_lib
from ladnas_tf.bad_input import BadInput

AUTOTUNE = tf.data.AUTOTUNE
# The pipeline functions hold no Python control flow on tensors: autograph would only add tracing
# time (it re-parses the source of every function and lambda it converts).
_graph = tf.autograph.experimental.do_not_convert

# Per-channel (mean, std) of images scaled to [0, 1]: DARTS's CIFAR-10 and ImageNet constants;
# the digits' over all 8x8 pixels of sklearn's copy.
MEAN_STD = {
    'cifar10': ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
    'imagenet2012': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    'digits': ((0.30526,) * 3, (0.37605,) * 3),
}
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                   'ship', 'truck')
NAMES = ('digits', 'cifar10', 'imagenet2012', 'imagenet_folder', 'folder')
AUGMENTATIONS = ('cifar', 'imagenet', None)
IMAGENET_FOLDER_SPLITS = {'train': 'train', 'test': 'val', 'val': 'val'}  # DARTS: <data>/train, <data>/val
DIGITS_SIZE = 16
IMAGENET_SIZE = 224
IMAGENET_TARS = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
SPLIT_NAMES = ('train', 'test', 'val', 'validation')  # sibling folders whose classes must agree
STATS_SAMPLE = 1000   # training images a folder's mean/std is estimated from
CIFAR_PAD = 4         # DARTS's RandomCrop(32, padding=4)


class DataError(BadInput):
    """A dataset that cannot be loaded as asked; the message is one line naming the problem."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One split of a dataset. `ds` is the unbatched, un-augmented tf.data pipeline."""
    name: str
    split: str
    num_classes: int
    num_examples: int
    image_size: int
    mean: tuple
    std: tuple
    class_names: tuple = dataclasses.field(repr=False)
    records: tf.data.Dataset = dataclasses.field(repr=False)  # (record, label), fixed order
    # (record, label) -> (raw image, int32 label): image_size x image_size x 3, uint8 or float in [0, 1]
    decode: Callable = dataclasses.field(repr=False)
    shuffle_buffer: int = 50_000  # records held by a training shuffle (records are small)
    # record -> the encoded image file's bytes (None: in-memory pixels); what the ImageNet view reads
    encoded: Callable = dataclasses.field(default=None, repr=False)

    def normalize(self, images):
        """Raw images (uint8, or float in [0, 1]) of any batch shape -> float32 normalised."""
        images = tf.image.convert_image_dtype(images, tf.float32)
        return (images - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)

    @property
    def ds(self):
        return (self.records.map(_graph(self.decode), num_parallel_calls=AUTOTUNE)
                .map(_graph(self._normalized), num_parallel_calls=AUTOTUNE))

    def _normalized(self, images, labels):
        return self.normalize(images), labels


def load(name, split, data_dir=None, image_size=None, download=True):
    """One split ('train', 'test', or a folder's split name) of a dataset by name.

    name: 'digits' (built in, offline), 'cifar10' or 'imagenet2012' (tfds, under data_dir),
    'imagenet_folder' (data_dir laid out as DARTS reads ImageNet: train/<class>/*.JPEG and
    val/<class>/*.JPEG; split 'test' is val) or 'imagenet_folder:<path>',
    'folder' (data_dir laid out <split>/<class>/*.jpg|png), 'folder:<path>' or a folder path.
    image_size: side of the square images produced (resized); None keeps the dataset's own.
    download: let tfds download a missing dataset (offline, tfds retries for minutes first).
    """
    name = os.fspath(name)
    prefix = name.split(':', 1)[0]
    if prefix in ('folder', 'imagenet_folder') and ':' in name:
        name, data_dir = prefix, name[len(prefix) + 1:]
    elif name not in NAMES and (os.sep in name or os.path.isdir(name)):
        name, data_dir = 'folder', name
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise DataError(f'image_size must be a positive int, got {image_size!r}')
    if name == 'digits':
        return _digits(split, image_size or DIGITS_SIZE)
    if name == 'imagenet_folder':
        if not data_dir:
            raise DataError("dataset 'imagenet_folder' needs data_dir (the folder holding train/ and val/)")
        return _imagenet_folder(os.fspath(data_dir), split, image_size)
    if name == 'folder':
        if not data_dir:
            raise DataError("dataset 'folder' needs data_dir (the folder holding <split>/<class>/)")
        return _folder(os.fspath(data_dir), split, image_size)
    if name in ('cifar10', 'imagenet2012'):
        return _tfds(name, split, data_dir, image_size, download)
    raise DataError(f'unknown dataset {name!r} (known: {", ".join(NAMES)}, '
                    f'folder:<path>, or the path of an image folder)')


def _check_split(name, split, known):
    if split not in known:
        raise DataError(f'{name} has no split {split!r} (known: {", ".join(known)})')


# ---- the built-in default: scikit-learn's handwritten digits ----

def _digits(split, image_size):
    """sklearn's 1,797 8x8 digits, upsampled to image_size, grey repeated to RGB; stratified 80/20."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    _check_split('digits', split, ('train', 'test'))
    digits = load_digits()
    train, test = train_test_split(np.arange(len(digits.target)), test_size=0.2, random_state=0,
                                   stratify=digits.target)
    index = np.sort(train if split == 'train' else test)
    images = digits.images[index, :, :, None].astype(np.float32) / 16.0
    images = tf.image.resize(images, (image_size, image_size)).numpy()
    images = np.clip(np.repeat(images, 3, axis=-1), 0.0, 1.0)
    records = tf.data.Dataset.from_tensor_slices((images, digits.target[index].astype(np.int32)))
    return Dataset('digits', split, 10, len(index), image_size, *MEAN_STD['digits'],
                   tuple(str(d) for d in range(10)), records, lambda image, label: (image, label))


# ---- image folders: <root>/<split>/<class>/*.jpg|png ----

def _subfolders(path, what):
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith('.'))
    except OSError as e:
        raise DataError(f'cannot read {what} {path}: {e.strerror}') from None


_READABLE = {}  # (split folder, its files) -> which are images: every file is checked once per process


def _list_split(split_dir):
    """(class names, files, labels) of one split folder, classes and files sorted; files whose header is
    not an image's are left out with one warning line, so that no epoch stops on them. A PNG or JPEG cut
    short (an interrupted copy: more of the folder may be missing) is refused in one line naming it."""
    classes, files, labels = _scan_split(split_dir)
    key = (split_dir, len(files), files[0], files[-1])
    if key not in _READABLE:
        status = [_file_status(f) for f in files]
        short = [(f, s) for f, s in zip(files, status) if s not in ('ok', 'unreadable')]
        if short:
            more = f' (and {len(short) - 1} more)' if len(short) > 1 else ''
            raise DataError(f'image file {short[0][0]} is cut short: {short[0][1]}{more}; copy it again or '
                            'remove it')
        _READABLE[key] = [s == 'ok' for s in status]
        bad = [f for f, ok in zip(files, _READABLE[key]) if not ok]
        if bad:
            absl_logging.warning('%s: skipped %d unreadable image file(s), e.g. %s', split_dir, len(bad), bad[0])
    readable = _READABLE[key]
    files = [f for f, ok in zip(files, readable) if ok]
    labels = [y for y, ok in zip(labels, readable) if ok]
    empty = sorted(set(classes) - {classes[y] for y in labels})
    if empty:
        raise DataError(f'class folder {os.path.join(split_dir, empty[0])} holds no readable image')
    return classes, files, labels


# The end marker of a complete file, looked for in its last TAIL_BYTES (some writers pad after it):
# TensorFlow's decoder fails on a file without it, mid-epoch and naming no file.
END_MARKERS = {b'\x89PNG\r\n\x1a\n': (b'IEND\xaeB`\x82', 'a PNG without its IEND chunk'),
               b'\xff\xd8\xff': (b'\xff\xd9', 'a JPEG without its end-of-image marker')}
TAIL_BYTES = 4096


def _file_status(path):
    """'ok', 'unreadable' (no image header), or what a PNG or JPEG cut short lacks at its end."""
    try:
        with open(path, 'rb') as f:  # opened once: a folder holds tens of thousands of small files
            size = os.fstat(f.fileno()).st_size
            if size <= TAIL_BYTES:
                f = io.BytesIO(f.read())
            head = f.read(8)
            f.seek(0)
            _shape(f, path)
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except (DataError, OSError):
        return 'unreadable'
    for magic, (marker, lacking) in END_MARKERS.items():
        if head.startswith(magic) and marker not in tail:
            return lacking
    return 'ok'


def _scan_split(split_dir):
    classes = _subfolders(split_dir, 'split folder')
    if not classes:
        raise DataError(f'split folder {split_dir} has no class folders (expected <class>/*.jpg|png)')
    if len(classes) < 2:
        raise DataError(f'split folder {split_dir} has one class folder ({classes[0]}): a classifier needs '
                        'at least 2')
    files, labels = [], []
    for label, cls in enumerate(classes):
        class_dir = os.path.join(split_dir, cls)
        try:
            names = sorted(e.name for e in os.scandir(class_dir)
                           if e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file())
        except OSError as e:
            raise DataError(f'cannot read class folder {class_dir}: {e.strerror}') from None
        if not names:
            raise DataError(f'class folder {class_dir} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
        files += [os.path.join(class_dir, n) for n in names]
        labels += [label] * len(names)
    return tuple(classes), files, labels


def _jpeg_size(f):
    """(height, width) from a JPEG's SOF segment, walking segments without decoding."""
    f.seek(2)
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        while kind == 0xFF:  # fill bytes
            kind = f.read(1)[0]
        if kind == 0x01 or 0xD0 <= kind <= 0xD8:  # markers without a length
            continue
        length = f.read(2)
        if len(length) < 2:
            return None
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
            sof = f.read(5)
            return struct.unpack('>HH', sof[1:5]) if len(sof) == 5 else None
        f.seek(struct.unpack('>H', length)[0] - 2, 1)


def image_shape(path):
    """(height, width) of a PNG, JPEG, GIF or BMP file read from its header; DataError if unreadable."""
    try:
        with open(path, 'rb') as f:
            return _shape(f, path)
    except OSError as e:
        raise DataError(f'cannot read image {path}: {e.strerror}') from None


def _shape(f, path):
    """image_shape of a file open at its start."""
    head = f.read(26)
    if head[:8] == b'\x89PNG\r\n\x1a\n' and len(head) >= 24:
        w, h = struct.unpack('>II', head[16:24])
        return h, w
    if head[:3] == b'\xff\xd8\xff':
        size = _jpeg_size(f)
        if size:
            return size
    elif head[:4] == b'GIF8' and len(head) >= 10:
        w, h = struct.unpack('<HH', head[6:10])
        return h, w
    elif head[:2] == b'BM' and len(head) >= 26:
        w, h = struct.unpack('<ii', head[18:26])
        return abs(h), w
    raise DataError(f'cannot read image {path}: not a valid PNG, JPEG, GIF or BMP file')


_SIZE_CACHE = {}  # (split folder, its files) -> the one size of all its images; a scan is seconds


def _common_size(split_dir, files):
    """The one (h, w) of every image in files, else DataError naming two that differ."""
    key = (split_dir, len(files), files[0], files[-1])
    if key not in _SIZE_CACHE:
        first, first_shape = files[0], image_shape(files[0])
        for f in files[1:]:
            shape = image_shape(f)
            if shape != first_shape:
                raise DataError(f'images in {split_dir} differ in size ({first_shape[0]}x{first_shape[1]} '
                                f'{first}, {shape[0]}x{shape[1]} {f}): pass image_size to resize them')
        _SIZE_CACHE[key] = first_shape
    return _SIZE_CACHE[key]


def _decoder(image_size, read, resize):
    """(record, label) -> (uint8 image_size^2 x 3 image, int32 label); resize: False when every image
    is known to have that size already, so no per-image check is paid."""
    @_graph
    def decode(record, label):
        image = tf.io.decode_image(read(record), channels=3, expand_animations=False)
        if resize:
            image = tf.cond(tf.reduce_all(tf.shape(image)[:2] == image_size), lambda: image,
                            lambda: _resize_uint8(image, image_size))
        return tf.ensure_shape(image, (image_size, image_size, 3)), tf.cast(label, tf.int32)
    return decode


def _resize_uint8(image, image_size):
    image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size))
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


_STATS_CACHE = {}


def _folder_mean_std(classes, root, splits, files):
    """CIFAR-10's constants for a CIFAR-10 folder, else estimated from a spread sample of the
    training images at their own size (of `files` when there is no train split), so every split
    and every image_size share them."""
    if classes == CIFAR10_CLASSES:
        return MEAN_STD['cifar10']
    if 'train' in splits:
        files = _list_split(os.path.join(root, 'train'))[1]
    key = (files[0], len(files))
    if key not in _STATS_CACHE:
        sample = [files[i] for i in np.linspace(0, len(files) - 1, min(STATS_SAMPLE, len(files)), dtype=int)]

        @_graph
        def moments(path):  # per channel: pixel count, sum, sum of squares
            image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
            image = tf.cast(image, tf.float64) / 255
            return tf.stack([tf.fill([3], tf.cast(tf.reduce_prod(tf.shape(image)[:2]), tf.float64)),
                             tf.reduce_sum(image, axis=(0, 1)), tf.reduce_sum(tf.square(image), axis=(0, 1))])
        n, total, squares = (tf.data.Dataset.from_tensor_slices(sample)
                             .map(moments, num_parallel_calls=AUTOTUNE)
                             .reduce(tf.zeros((3, 3), tf.float64), _graph(lambda acc, m: acc + m)).numpy())
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean ** 2, 1e-6))
        _STATS_CACHE[key] = (tuple(mean.tolist()), tuple(std.tolist()))
    return _STATS_CACHE[key]


def _folder(root, split, image_size):
    if not os.path.exists(root):
        raise DataError(f'dataset folder {root} does not exist')
    if not os.path.isdir(root):
        raise DataError(f'dataset folder {root} is not a folder')
    splits = _subfolders(root, 'dataset folder')
    if not splits:
        raise DataError(f'dataset folder {root} is empty (expected {root}/<split>/<class>/*.jpg|png)')
    if split not in splits:
        raise DataError(f'dataset folder {root} has no split folder {split!r} (found: {", ".join(splits)})')
    split_dir = os.path.join(root, split)
    classes, files, labels = _list_split(split_dir)
    for other in splits:
        if other != split and other in SPLIT_NAMES:
            other_classes = tuple(_subfolders(os.path.join(root, other), 'split folder'))
            if other_classes != classes:
                only = lambda a, b: ', '.join(sorted(set(a) - set(b))) or '-'
                raise DataError(f'class folders differ between splits {split!r} and {other!r} of {root}: '
                                f'only in {split}: {only(classes, other_classes)}; '
                                f'only in {other}: {only(other_classes, classes)}')
    resize = image_size is not None
    if image_size is None:
        h, w = _common_size(split_dir, files)
        if h != w:
            raise DataError(f'images in {split_dir} are {h}x{w}, not square: pass image_size')
        for other in splits:  # other splits must agree, judged by their first image
            if other != split and other in SPLIT_NAMES:
                other_shape = image_shape(_list_split(os.path.join(root, other))[1][0])
                if other_shape != (h, w):
                    raise DataError(f'images of split {other!r} are {other_shape[0]}x{other_shape[1]}, '
                                    f'those of {split!r} {h}x{w}: pass image_size')
        image_size = h
    else:
        image_shape(files[0])  # a readable first image, or a one-line error now
    mean, std = _folder_mean_std(classes, root, splits, files)
    records = tf.data.Dataset.from_tensor_slices((files, np.asarray(labels, np.int32)))
    name = os.path.basename(os.path.normpath(root))
    return Dataset(name, split, len(classes), len(files), image_size, mean, std, classes, records,
                   _decoder(image_size, tf.io.read_file, resize), encoded=tf.io.read_file)


def _imagenet_folder(root, split, image_size):
    """ImageNet laid out as DARTS's train_imagenet.py reads it (torchvision ImageFolder on
    <root>/train and <root>/val, one folder per class, the same classes in both); images of any size,
    evaluated in the resize-256 / centre-crop-224 view, trained in augment.py's view."""
    if split not in IMAGENET_FOLDER_SPLITS:
        raise DataError(f"imagenet_folder has no split {split!r} (known: {', '.join(IMAGENET_FOLDER_SPLITS)})")
    if not os.path.isdir(root):
        raise DataError(f'ImageNet folder {root} does not exist or is not a folder')
    found = _subfolders(root, 'ImageNet folder')
    missing = [s for s in ('train', 'val') if s not in found]
    if missing:
        raise DataError(f'ImageNet folder {root} lacks {" and ".join(missing)}/ (expected '
                        f'{root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG)')
    classes = {s: tuple(_subfolders(os.path.join(root, s), 'split folder')) for s in ('train', 'val')}
    if classes['train'] != classes['val']:
        raise DataError(f'ImageNet folder {root}: train/ has {len(classes["train"])} class folders, val/ '
                        f'{len(classes["val"])}, not the same classes (expected one folder per class in both)')
    classes, files, labels = _list_split(os.path.join(root, IMAGENET_FOLDER_SPLITS[split]))
    image_size = image_size or IMAGENET_SIZE
    view = _imagenet_decoder(image_size)
    records = tf.data.Dataset.from_tensor_slices((files, np.asarray(labels, np.int32)))
    return Dataset('imagenet_folder', split, len(classes), len(files), image_size, *MEAN_STD['imagenet2012'],
                   classes, records, _graph(lambda path, label: view(tf.io.read_file(path), label)),
                   shuffle_buffer=len(files), encoded=tf.io.read_file)


# ---- tensorflow-datasets: CIFAR-10 and ImageNet ----

def _imagenet_manual_dir(builder, data_dir):
    """tfds's manual_dir, <data_dir>/downloads/manual, once it holds the ImageNet tars; else DataError."""
    root = os.path.expanduser(os.fspath(data_dir)) if data_dir else os.fspath(builder.data_dir_root)
    manual = os.path.join(root, 'downloads', 'manual')
    missing = [t for t in IMAGENET_TARS if not os.path.isfile(os.path.join(manual, t))]
    if missing:
        raise DataError(f'imagenet2012 is not prepared in {root} and needs a manual download: '
                        f'put {" and ".join(missing)} (from image-net.org) in {manual}')
    return manual


def _imagenet_decoder(image_size):
    """DARTS's ImageNet evaluation view: shorter side to size*256/224, centre crop size x size."""
    @_graph
    def decode(encoded, label):
        image = tf.image.convert_image_dtype(
            tf.io.decode_image(encoded, channels=3, expand_animations=False), tf.float32)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = round(image_size * 256 / 224) / tf.reduce_min(shape)
        image = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32))
        image = tf.image.resize_with_crop_or_pad(image, image_size, image_size)
        return tf.clip_by_value(image, 0.0, 1.0), tf.cast(label, tf.int32)
    return decode


def _tfds(name, split, data_dir, image_size, download):
    import tensorflow_datasets as tfds
    _check_split(name, split, ('train', 'test') + (('validation',) if name == 'imagenet2012' else ()))
    tfds_split = 'validation' if name == 'imagenet2012' and split == 'test' else split
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            manual = _imagenet_manual_dir(builder, data_dir) if name == 'imagenet2012' else None
            if not download:
                raise DataError(f'{name} is not prepared in {builder.data_dir_root} and download is off')
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
                manual_dir=manual, try_download_gcs=False))
        records = builder.as_dataset(split=tfds_split, as_supervised=True, shuffle_files=False,
                                     decoders={'image': tfds.decode.SkipDecoding()})
    except DataError:
        raise
    except Exception as e:  # tfds's errors run to many lines; the first names the problem
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f'cannot load {name} {split} through tfds: {first}') from None
    splits = builder.info.splits
    count = splits[tfds_split].num_examples if tfds_split in splits else int(records.cardinality())
    if count < 0:
        count = int(records.reduce(0, _graph(lambda n, _: n + 1)))
    labels = builder.info.features['label']
    if name == 'imagenet2012':
        image_size = image_size or IMAGENET_SIZE
        decode, buffer = _imagenet_decoder(image_size), 10_000  # ~110 KB per encoded image
    else:
        decode, buffer = _decoder(image_size or 32, tf.identity, resize=image_size not in (None, 32)), 50_000
        image_size = image_size or 32
    return Dataset(name, split, labels.num_classes, count, image_size, *MEAN_STD[name],
                   tuple(labels.names), records, decode, buffer, encoded=tf.identity)


# ---- the search split and batches ----

def search_split(dataset, train_portion=0.5, seed=0):
    """(weight part, architecture part): a seeded permutation of the examples cut at train_portion."""
    if not 0 < train_portion < 1:
        raise DataError(f'train_portion must lie strictly between 0 and 1, got {train_portion}')
    return _partition(dataset, train_portion, seed, ('weight', 'arch'))


def validation_split(dataset, fraction, seed=0):
    """(training part, validation part): `fraction` of the examples held out by a seeded
    permutation, for choosing a model without looking at the test split."""
    if not 0 < fraction < 1:
        raise DataError(f'validation_fraction must lie in [0, 1) and be > 0 to split, got {fraction}')
    return _partition(dataset, 1.0 - fraction, seed, ('train', 'validation'))


def _partition(dataset, portion, seed, tags):
    n = dataset.num_examples
    cut = int(np.floor(portion * n))
    if not 0 < cut < n:
        raise DataError(f'{dataset.name} {dataset.split} ({n} examples) is too small to split at '
                        f'{portion:g}')
    in_weight = np.zeros(n, bool)
    in_weight[np.random.default_rng(seed).permutation(n)[:cut]] = True

    def part(mask, count, tag):
        mask = tf.constant(mask)
        records = (dataset.records.enumerate()
                   .filter(_graph(lambda i, record: tf.gather(mask, i)))
                   .map(_graph(lambda i, record: record)))
        return dataclasses.replace(dataset, split=f'{dataset.split}.{tag}', num_examples=count,
                                   records=records)
    return part(in_weight, cut, tags[0]), part(~in_weight, n - cut, tags[1])


def _seed_pair(seed):
    """A [2] int64 stateless seed from an int or a [2] seed."""
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        return tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    return tf.cast(seed, tf.int64)


def _batched(fn):
    """Lets a function of a [B, H, W, C] batch take one [H, W, C] image too."""
    def wrapped(images, *args, **kwargs):
        images = tf.convert_to_tensor(images)
        if images.shape.rank == 3:
            return fn(images[None], *args, **kwargs)[0]
        return fn(images, *args, **kwargs)
    wrapped.__doc__ = fn.__doc__
    return wrapped


@_batched
def random_crop_flip(images, seed, padding=CIFAR_PAD):
    """DARTS's CIFAR augmentation of raw images: zero-pad by `padding`, crop back at a random offset,
    flip horizontally with probability 1/2; independently per image. seed: an int or a [2] seed."""
    oy_seed, ox_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(_seed_pair(seed), 3))
    n, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    offset = lambda s: tf.random.stateless_uniform([n, 1], s, 0, 2 * padding + 1, dtype=tf.int32)
    rows = offset(oy_seed) + tf.range(h)[None]
    cols = offset(ox_seed) + tf.range(w)[None]
    crops = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([n, 1, 1, 1], flip_seed) < 0.5
    return tf.where(flip, tf.reverse(crops, axis=[2]), crops)


@_batched
def cutout(images, length, seed):
    """DARTS's Cutout (applied after normalisation): zeroes a length x length square, clipped at the
    borders, centred on a random pixel; independently per image. seed: an int or a [2] seed."""
    y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(_seed_pair(seed), 2))
    n, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    centre = lambda s, size: tf.random.stateless_uniform([n, 1], s, 0, size, dtype=tf.int32)
    span = lambda c, size: ((tf.range(size)[None] >= c - length // 2)
                            & (tf.range(size)[None] < c - length // 2 + length))
    inside = span(centre(y_seed, h), h)[:, :, None] & span(centre(x_seed, w), w)[:, None, :]
    return images * tf.cast(~inside, images.dtype)[..., None]


_cutout = cutout  # batches' `cutout` argument shadows the function


def batches(dataset, batch_size, training, seed=None, augment='cifar', cutout=0, drop_remainder=None,
            repeat=False):
    """Batched, normalised pipeline. Training: seeded shuffle, then per batch DARTS's CIFAR
    augmentation (random crop + flip), normalisation and cutout; or, with augment='imagenet', per
    example the ImageNet training view (augment.py) seeded by (seed, the example's index), then
    normalisation and cutout. Evaluation: the examples in order, in the dataset's own view.
    drop_remainder defaults to `training`, so an evaluation sees every example."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f'batch size must be a positive int, got {batch_size!r}')
    if batch_size > dataset.num_examples:
        raise DataError(f'batch size {batch_size} is larger than {dataset.name} {dataset.split} '
                        f'({dataset.num_examples} examples)')
    if augment not in AUGMENTATIONS:
        raise DataError(f"unknown augmentation {augment!r} (known: 'cifar', 'imagenet', None)")
    if training and augment == 'imagenet':
        return _imagenet_batches(dataset, batch_size, seed, cutout, drop_remainder, repeat)
    if cutout < 0:
        raise DataError(f'cutout length must be >= 0, got {cutout}')
    ds = dataset.records
    if training:
        ds = ds.shuffle(min(dataset.num_examples, dataset.shuffle_buffer), seed=seed,
                        reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.map(_graph(dataset.decode), num_parallel_calls=AUTOTUNE)
    if drop_remainder is None:
        drop_remainder = training
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if training and (augment or cutout):
        @_graph
        def augment_batch(batch, pair):
            images, labels = batch
            crop_seed, cut_seed = tf.unstack(tf.random.experimental.stateless_split(pair, 2))
            if augment == 'cifar':
                images = random_crop_flip(images, crop_seed)
            images = dataset.normalize(images)
            return (_cutout(images, cutout, cut_seed) if cutout else images), labels
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(augment_batch, num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.map(_graph(dataset._normalized), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def _example_seed(seed, index):
    """The [2] stateless seed of one example: (the pass's seed, the example's index in the dataset)."""
    return tf.stack([tf.constant(0 if seed is None else seed, tf.int64), tf.cast(index, tf.int64)])


def _imagenet_batches(dataset, batch_size, seed, cutout, drop_remainder, repeat):
    """Training batches in the ImageNet view: records shuffled with their indices, each example
    augmented by its own seed (so the same (seed, example) always gives the same view, whatever the
    order or the parallelism), batched, normalised, optionally cut out."""
    if dataset.encoded is None:
        raise DataError(f'the ImageNet training view needs encoded image files; {dataset.name} holds '
                        f'decoded pixels (use augment=cifar or none)')
    ds = dataset.records.enumerate().shuffle(min(dataset.num_examples, dataset.shuffle_buffer), seed=seed,
                                             reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    @_graph
    def view(index, example):
        record, label = example
        image = augment_lib.imagenet_train_view(dataset.encoded(record), _example_seed(seed, index),
                                                dataset.image_size)
        return image, tf.cast(label, tf.int32)
    ds = ds.map(view, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True if drop_remainder is None else drop_remainder)

    @_graph
    def finish(batch, pair):
        images, labels = batch
        images = dataset.normalize(images)
        return (_cutout(images, cutout, pair) if cutout else images), labels
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((ds, seeds)).map(finish, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
