"""The differentiable search loop (DARTS / PC-DARTS): run, watch, resume, scale out.

The training split is cut into the weight half and the architecture half (train_portion). Each epoch
walks the weight half in a seeded order; the architecture batches come from one persistent stream
over the architecture half that runs on across epochs. After each epoch the supernet is evaluated
on the architecture half (BN's moving statistics, as DARTS's infer) and the genotype is derived and
logged.

A run directory holds: config.json (the effective settings), checkpoints/ (tf.train.CheckpointManager:
weights, alpha, beta, both optimizers, the step and the data position), tensorboard/ (losses,
accuracies, learning rates, softmax(alpha) heatmaps, the genotype as text), genotype.json, cells/
(DOT drawings of both cells, PNG/PDF when graphviz is installed) and summary.json. A run killed at any
moment and restarted with the same settings resumes at the last checkpoint and, with its seeds,
replays the same data in the same order: it ends with the same genotype as an uninterrupted run.
"""
import dataclasses
import hashlib
import json
import os
import shutil
import time

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from ladnas_tf import architect, objective, search_space, supernet
from ladnas_tf.bad_input import BadInput
from ladnas_tf.latency import errors, lpm as lpm_lib, targets
from ladnas_tf.run_dir import write_json

METHODS = ('darts', 'pcdarts')
CONFIG_FILE = 'config.json'
OUTPUTS = (CONFIG_FILE, 'checkpoints', 'tensorboard', 'genotype.json', 'cells', 'summary.json', 'flags.cfg')


class SearchError(BadInput):
    """A search that cannot run as asked; the message is one line naming the problem."""


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Every setting that shapes a search's result (a resume must match all of them)."""
    dataset: str = 'digits'
    data_dir: str = None
    method: str = 'darts'
    order: str = 'first'
    epochs: int = 50
    batch_size: int = 64
    learning_rate: float = 0.025
    learning_rate_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_learning_rate: float = 3e-4
    arch_weight_decay: float = 1e-3
    channels: int = 16
    layers: int = 8
    image_size: int = None
    partial_channels: int = 4          # PC-DARTS's K (pcdarts only)
    warmup_epochs: int = 0             # epochs with alpha frozen (PC-DARTS: 15)
    recompute: bool = False            # re-run each mixed op's forward for its gradient: less memory, slower
    train_portion: float = 0.5
    seed: int = 0
    max_steps_per_epoch: int = None    # cap on steps (and evaluation batches) per epoch
    final_eval_batches: int = None     # batches of the reported final evaluation (None: the epochs' cap)
    augment: bool = True               # DARTS's crop + flip (never for the digits)
    # The latency term of Eq. 3 (lambda_ per ms of the LPM's target) or the FLOPs baseline (eta per MMAC)
    lambda_: float = 0.0
    eta: float = 0.0
    lpm_dir: str = None
    target_latency_ms: float = None    # adapts lambda_ by dual ascent on LAT(alpha) <= target
    lat_samples: int = 20              # M sub-networks per LAT(alpha) estimate
    # What the search believes in place of the LPM (latency/errors.py): none, additive (size: sigma, ms;
    # the paper's Table 3), multiplicative (sigma, relative), systematic (MRE), predictor (a worse LPM)
    latency_error: str = 'none'
    latency_error_size: float = 0.0
    latency_error_lpm: str = None

    def latency_error_spec(self):
        return errors.Spec(self.latency_error, self.latency_error_size, self.latency_error_lpm)

    def check(self):
        if self.method not in METHODS:
            raise SearchError(f'unknown method {self.method!r} (known: {", ".join(METHODS)})')
        positive = ('epochs', 'batch_size', 'channels', 'layers', 'partial_channels')
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SearchError(f'{name} must be a positive integer, got {value!r}')
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise SearchError(f'max_steps_per_epoch must be positive, got {self.max_steps_per_epoch}')
        if self.final_eval_batches is not None and self.final_eval_batches < 1:
            raise SearchError(f'final_eval_batches must be positive, got {self.final_eval_batches}')
        if not 0 <= self.warmup_epochs:
            raise SearchError(f'warmup_epochs must not be negative, got {self.warmup_epochs}')
        if self.method == 'pcdarts' and (self.channels % self.partial_channels
                                         or (self.channels // self.partial_channels) % 2):
            raise SearchError(f'channels {self.channels} must split into partial_channels '
                              f'{self.partial_channels} groups of an even size')
        if self.recompute and self.order == 'second':
            raise SearchError('recompute supports the first-order search only (the unrolled step '
                              'substitutes the weights, which a recomputed pass would not see)')
        self.architect_config()  # checks the optimisation settings
        try:
            objective.check(self.lambda_, self.eta, self.lpm_dir, self.target_latency_ms, self.lat_samples,
                            self.latency_error_spec())
        except objective.ObjectiveError as e:
            raise SearchError(str(e)) from None

    def objective(self):
        """The architecture objective these settings ask for (loads the LPM)."""
        try:
            return objective.Objective(self.lambda_, self.eta, self.lpm_dir, self.target_latency_ms,
                                       self.lat_samples, self.latency_error_spec(), self.seed)
        except (objective.ObjectiveError, lpm_lib.LPMError, targets.TargetError) as e:
            raise SearchError(str(e)) from None

    @property
    def k(self):
        return self.partial_channels if self.method == 'pcdarts' else 1

    def architect_config(self):
        try:
            return architect.ArchitectConfig(
                order=self.order, learning_rate=self.learning_rate, learning_rate_min=self.learning_rate_min,
                momentum=self.momentum, weight_decay=self.weight_decay, grad_clip=self.grad_clip,
                arch_learning_rate=self.arch_learning_rate, arch_weight_decay=self.arch_weight_decay)
        except architect.SearchConfigError as e:
            raise SearchError(str(e)) from None


# ---- data ----

@dataclasses.dataclass
class SearchData:
    """The two halves as epoch-seeded batch streams. `batches(part, epoch)` gives a finite, batched
    tf.data.Dataset of (images, labels) for part 'weight' or 'arch'; the same epoch gives the same
    batches. `evaluation()` gives the architecture half in order."""
    num_classes: int
    image_size: int
    channels: int
    steps: dict          # part -> batches per epoch
    batches: object
    evaluation: object


def load_search_data(config):
    """SearchData from ladnas_tf.data (the built-in digits, tfds or an image folder)."""
    from ladnas_tf import data
    train = data.load(config.dataset, 'train', config.data_dir, config.image_size)
    parts = dict(zip(('weight', 'arch'), data.search_split(train, config.train_portion, config.seed)))
    steps = {}
    for name, part in parts.items():
        if config.batch_size > part.num_examples:
            raise SearchError(f'batch size {config.batch_size} is larger than the {name} half of '
                              f'{train.name} ({part.num_examples} examples)')
        steps[name] = part.num_examples // config.batch_size
    augment = 'cifar' if config.augment and train.name != 'digits' else None

    def batches(name, epoch):
        return data.batches(parts[name], config.batch_size, training=True,
                            seed=_stream_seed(config.seed, epoch, name), augment=augment)

    # Folders list their images class by class: evaluate in one fixed shuffled order, so that a capped
    # evaluation (max_steps_per_epoch) sees every class.
    arch = parts['arch']
    mixed = dataclasses.replace(arch, records=arch.records.shuffle(arch.num_examples, seed=config.seed,
                                                                   reshuffle_each_iteration=False))

    def evaluation():
        return data.batches(mixed, config.batch_size, training=False, drop_remainder=True)
    return SearchData(train.num_classes, train.image_size, 3, steps, batches, evaluation)


def array_search_data(images, labels, num_classes, batch_size, train_portion=0.5, seed=0):
    """SearchData from in-memory arrays (images NHWC float32, labels int): a seeded split, no
    augmentation. For tests and for users whose data is already in memory."""
    images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32)
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(np.floor(train_portion * len(images)))
    parts = {'weight': order[:cut], 'arch': order[cut:]}
    for name, idx in parts.items():
        if batch_size > len(idx):
            raise SearchError(f'batch size {batch_size} is larger than the {name} half ({len(idx)} examples)')

    def batches(name, epoch):
        idx = parts[name]
        ds = tf.data.Dataset.from_tensor_slices((images[idx], labels[idx]))
        return ds.shuffle(len(idx), seed=_stream_seed(seed, epoch, name)).batch(batch_size, drop_remainder=True)

    def evaluation():
        idx = parts['arch']
        return tf.data.Dataset.from_tensor_slices((images[idx], labels[idx])).batch(batch_size, drop_remainder=True)
    steps = {name: len(idx) // batch_size for name, idx in parts.items()}
    return SearchData(num_classes, images.shape[1], images.shape[-1], steps, batches, evaluation)


def _stream_seed(seed, epoch, part):
    return int(seed) * 1_000_003 + 2 * int(epoch) + (part == 'arch')


class ArchStream:
    """The persistent iterator over the architecture half: one iterator per pass over the half,
    continued across epochs; its position (pass, batch) is part of the checkpoint."""

    def __init__(self, data, strategy, position):
        self.data, self.strategy, self.position = data, strategy, position  # position: int64 [2] variable
        self._iterator = None

    def _open(self):
        epoch, step = (int(v) for v in self.position.numpy())
        ds = self.data.batches('arch', epoch).skip(step)
        self._iterator = iter(self.strategy.experimental_distribute_dataset(ds))

    def next(self):
        if self._iterator is None:
            self._open()
        try:
            batch = next(self._iterator)
        except StopIteration:
            self.position.assign([self.position[0] + 1, 0])
            self._open()
            batch = next(self._iterator)
        self.position.assign_add([0, 1])
        return batch


# ---- the run directory ----

# Settings that change only what a finished search reports, never the search: a run can be re-reported with them.
REPORT_ONLY = ('final_eval_batches',)


def lpm_sha256(lpm_dir):
    """SHA-256 of an LPM directory's metadata and model: a resumed search must keep its predictor, and a
    path alone does not say that the file behind it is the same."""
    h = hashlib.sha256()
    for name in (lpm_lib.METADATA_FILE, lpm_lib.MODEL_FILE):
        with open(os.path.join(lpm_dir, name), 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                h.update(chunk)
    return h.hexdigest()


def run_settings(config):
    """What identifies a search in its run directory: the settings and the content of its LPM(s)."""
    settings = dataclasses.asdict(config)
    for key in ('lpm_dir', 'latency_error_lpm'):
        if settings.get(key):
            settings[key + '_sha256'] = lpm_sha256(settings[key])
    return settings


def settings_differ(saved, settings):
    """The keys whose values differ between a run directory's config.json and run_settings(config); a
    run directory from before LPM hashes were recorded is judged on the LPM's path alone."""
    return [k for k in sorted(set(saved) | set(settings))
            if saved.get(k) != settings.get(k) and k not in REPORT_ONLY
            and not (k.endswith('_sha256') and k not in saved)]


def prepare_run_dir(model_dir, config, overwrite=False):
    """True when model_dir holds a search of this very config to resume; False for a fresh one.
    A directory of anything else is refused unless overwrite, which removes our outputs from it."""
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise SearchError(f'{model_dir} exists and is not a directory')
    settings = run_settings(config)
    if os.path.isdir(model_dir) and os.listdir(model_dir):
        if overwrite:
            for name in os.listdir(model_dir):
                path = os.path.join(model_dir, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        else:
            path = os.path.join(model_dir, CONFIG_FILE)
            if not os.path.isfile(path):
                raise SearchError(f'{model_dir} is not empty and holds no {CONFIG_FILE} of a search '
                                  '(pass --overwrite to replace it, or another --model_dir)')
            with open(path) as f:
                saved = json.load(f)
            differ = settings_differ(saved, settings)
            if differ:
                detail = ', '.join(f'{k}: {saved.get(k)!r} -> {settings.get(k)!r}' for k in differ[:4])
                raise SearchError(f'{model_dir} holds a search with other settings ({detail}); '
                                  'pass --overwrite or another --model_dir')
            return True
    os.makedirs(model_dir, exist_ok=True)
    write_json(os.path.join(model_dir, CONFIG_FILE), settings)
    return False



# ---- summaries ----

def _heatmap(weights):
    """A [1, H, W, 3] uint8 heatmap of an edges x ops matrix."""
    try:
        from ladnas_tf.visualize import alpha_image
        return alpha_image(weights)
    except ImportError:  # matplotlib missing: a grey-scale map
        w = np.asarray(weights, np.float64)
        grey = np.round(255 * w / max(w.max(), 1e-12)).astype(np.uint8)
        return np.repeat(np.repeat(grey, 8, 0), 8, 1)[None, :, :, None].repeat(3, -1)


# tf.summary.scalar/image/text need the tensorboard package, which only viewing the logs needs: the
# same records are written with tf.summary.write and the plugins' metadata.

def _write(tag, tensor, step, plugin):
    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = plugin
    tf.summary.write(tag, tensor, step=step, metadata=meta)


def _scalars(writer, step, values):
    with writer.as_default():
        for tag, value in values.items():
            _write(tag, tf.constant(float(value), tf.float32), step, 'scalars')


def _image(tag, image, step):
    """image: [1, H, W, 3] uint8, as tf.summary.image stores it (width, height, PNG)."""
    _, h, w, _ = image.shape
    _write(tag, tf.stack([tf.as_string(w), tf.as_string(h), tf.image.encode_png(image[0])]), step, 'images')


def log_architecture(writer, model, step):
    """softmax(alpha) (and normalised beta) heatmaps and the genotype as text; returns the genotype."""
    normal, beta_normal, reduce, beta_reduce = (None if t is None else np.asarray(t)
                                                for t in model.mixing_weights())
    genotype = model.genotype()
    with writer.as_default():
        _image('alpha/normal', _heatmap(normal), step)
        _image('alpha/reduce', _heatmap(reduce), step)
        if beta_normal is not None:
            _image('beta/normal_reduce', _heatmap(np.stack([beta_normal, beta_reduce], 1)), step)
        _write('genotype', tf.constant(str(genotype)), step, 'text')
    writer.flush()
    return genotype


def _finished_summary(model_dir, config):
    """The summary of a finished search reported as this config asks (same final_eval_batches), else None."""
    path = os.path.join(model_dir, 'summary.json')
    try:
        with open(path) as f:
            summary = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    same_report = summary.get('final_eval_batches') == config.final_eval_batches
    return summary if same_report and summary.get('epochs') == config.epochs else None


def save_outputs(model_dir, genotype, summary):
    write_json(os.path.join(model_dir, 'genotype.json'), json.loads(genotype.to_json()))
    try:
        from ladnas_tf.visualize import save_cell_drawing
        for name in ('normal', 'reduce'):
            save_cell_drawing(getattr(genotype, name), os.path.join(model_dir, 'cells', name),
                              title=f'{name} cell')
    except ImportError:
        pass
    write_json(os.path.join(model_dir, 'summary.json'), summary)


# ---- the search ----

class Search:
    """A supernet, its Architect, the architecture objective, the loop state and its checkpoint.
    arch_loss: an ArchLoss replacing the one the settings ask for (tests, experiments)."""

    def __init__(self, config, data, strategy=None, arch_loss=None):
        config.check()
        self.config, self.data = config, data
        self.strategy = strategy or tf.distribute.get_strategy()
        replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % replicas:
            raise SearchError(f'batch size {config.batch_size} does not split over {replicas} replicas')
        self.steps_per_epoch = min(data.steps['weight'], config.max_steps_per_epoch or data.steps['weight'])
        with self.strategy.scope():
            self.model = supernet.build_supernet(
                config.channels, config.layers, data.num_classes, data.image_size, config.k,
                edge_normalization=config.method == 'pcdarts', seed=config.seed, in_channels=data.channels,
                recompute=config.recompute)
            self.objective = config.objective()
            arch_loss = arch_loss if arch_loss is not None else self.objective.arch_loss
            self.architect = architect.Architect(self.model, config.architect_config(), self.steps_per_epoch,
                                                 config.epochs, arch_loss, self.strategy)
        # Loop bookkeeping: plain variables, outside the strategy.
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name='epoch')
        self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name='epoch_step')
        self.arch_position = tf.Variable([0, 0], dtype=tf.int64, trainable=False, name='arch_position')
        # loss sum, correct, count, arch loss sum, arch steps of the current epoch; seconds so far
        self.sums = tf.Variable(tf.zeros([5], tf.float64), trainable=False, name='epoch_sums')
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name='seconds')
        # Every variable by position: tf.train.Checkpoint does not reach the weights of Keras 3 layers
        # held in lists (the cells), only the model's own.
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, model_weights=list(self.model.weights), weight_optimizer=self.architect.weight_optimizer,
            arch_optimizer=self.architect.arch_optimizer, epoch=self.epoch, epoch_step=self.epoch_step,
            arch_position=self.arch_position, epoch_sums=self.sums, seconds=self.seconds,
            objective=tf.train.Checkpoint(**self.objective.variables()))

    @property
    def global_step(self):
        return int(self.architect.weight_optimizer.iterations)

    def restore(self, manager):
        if manager.latest_checkpoint is None:
            return False
        try:
            self.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        except (ValueError, AssertionError, tf.errors.OpError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SearchError(f'checkpoint {manager.latest_checkpoint} is from another configuration '
                              f'({first[:160]})') from None
        return True

    def evaluate(self, limit=None):
        """(loss, top-1 %, images) of the supernet on the architecture half, at most `limit` batches
        (None: the epochs' cap)."""
        totals = np.zeros(3)
        limit = limit or self.config.max_steps_per_epoch
        for i, batch in enumerate(self.strategy.experimental_distribute_dataset(self.data.evaluation())):
            if limit is not None and i >= limit:
                break
            logs = self.architect.evaluate(batch)
            totals += [logs['loss_sum'], logs['correct'], logs['count']]
        count = max(totals[2], 1)
        return totals[0] / count, 100 * totals[1] / count, int(totals[2])

    def run_epoch(self, manager, writer, checkpoint_every, progress, log):
        epoch, start_step = int(self.epoch), int(self.epoch_step)
        update_arch = epoch >= self.config.warmup_epochs
        arch_stream = ArchStream(self.data, self.strategy, self.arch_position)
        ds = self.data.batches('weight', epoch).skip(start_step).take(self.steps_per_epoch - start_step)
        bar = None
        if progress:
            import keras
            bar = keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=['loss', 'acc', 'arch_loss', 'lr'])
            bar.update(start_step)
        last_save, tic = time.time(), time.time()
        for batch in self.strategy.experimental_distribute_dataset(ds):
            lr = self.architect.learning_rate
            logs = self.architect.step(batch, arch_stream.next() if update_arch else None, update_arch)
            self.sums.assign_add([logs['loss'], logs['correct'], logs['count'], logs.get('arch_loss', 0.0),
                                  float(update_arch)])
            self.epoch_step.assign_add(1)
            step = self.global_step
            scalars = {'train/loss': logs['loss'], 'train/learning_rate': lr}
            if update_arch:
                scalars.update({f'arch/{k[5:]}': v for k, v in logs.items() if k.startswith('arch_')})
                scalars.update(self.objective.scalars())
            _scalars(writer, step, scalars)
            if bar is not None:
                s = self.sums.numpy()
                bar.update(int(self.epoch_step), [('loss', s[0] / max(int(self.epoch_step), 1)),
                                                  ('acc', 100 * s[1] / max(s[2], 1)), ('lr', lr)]
                           + ([('arch_loss', s[3] / s[4])] if s[4] else []))
            if checkpoint_every and time.time() - last_save >= checkpoint_every:
                self.seconds.assign_add(time.time() - tic)
                tic = last_save = time.time()
                manager.save(checkpoint_number=step)
        s = self.sums.numpy()
        train_loss, train_acc = s[0] / max(self.steps_per_epoch, 1), 100 * s[1] / max(s[2], 1)
        valid_loss, valid_acc, valid_images = self.evaluate()
        genotype = log_architecture(writer, self.model, self.global_step)
        _scalars(writer, self.global_step, {'epoch/train_loss': train_loss, 'epoch/train_accuracy': train_acc,
                                            'epoch/valid_loss': valid_loss, 'epoch/valid_accuracy': valid_acc})
        log(f'epoch {epoch + 1}/{self.config.epochs}: train loss {train_loss:.4f} acc {train_acc:.2f}%, '
            f'valid loss {valid_loss:.4f} acc {valid_acc:.2f}%{"" if update_arch else " (alpha frozen)"}; '
            f'genotype {genotype}')
        self.seconds.assign_add(time.time() - tic)
        self.epoch.assign_add(1)
        self.epoch_step.assign(0)
        self.sums.assign(tf.zeros([5], tf.float64))
        manager.save(checkpoint_number=self.global_step)
        return {'train_loss': train_loss, 'train_accuracy': train_acc, 'valid_loss': valid_loss,
                'valid_accuracy': valid_acc, 'valid_images': valid_images}


def search(config, model_dir, overwrite=False, strategy=None, data=None, arch_loss=None,
           checkpoint_every=300, progress=True, flags_text=None, log=print, measure_latency=True):
    """Runs (or resumes, or just reports a finished) search; returns the summary dict.

    data: a SearchData (default: load_search_data(config)); arch_loss: an architect.ArchLoss replacing
    the settings' objective; checkpoint_every: seconds between mid-epoch checkpoints (0: only at epoch
    ends); measure_latency: time the derived network on the latency target for the summary."""
    config.check()
    data = data if data is not None else load_search_data(config)  # bad data fails before any write
    existed = os.path.isdir(model_dir) and bool(os.listdir(model_dir))
    resume = prepare_run_dir(model_dir, config, overwrite)
    finished = _finished_summary(model_dir, config) if resume else None
    if finished is not None:  # the same command again: nothing to do, nothing rewritten
        log(f'{model_dir}: this search is finished; its summary.json stands')
        return finished
    try:
        if flags_text is not None:
            with open(os.path.join(model_dir, 'flags.cfg'), 'w') as f:
                f.write(flags_text)
        run = Search(config, data, strategy, arch_loss)
    except BaseException:
        if not existed:  # a run that fails before its first step leaves nothing behind
            shutil.rmtree(model_dir, ignore_errors=True)
        raise
    manager = tf.train.CheckpointManager(run.checkpoint, os.path.join(model_dir, 'checkpoints'), max_to_keep=2)
    if run.restore(manager):
        log(f'resumed {model_dir} at epoch {int(run.epoch) + 1}, step {int(run.epoch_step)} of '
            f'{run.steps_per_epoch}')
    elif resume:
        log(f'{model_dir}: settings match but no checkpoint yet; starting over')
    writer = tf.summary.create_file_writer(os.path.join(model_dir, 'tensorboard'))
    epoch_logs = {}
    while int(run.epoch) < config.epochs:
        epoch_logs = run.run_epoch(manager, writer, checkpoint_every, progress, log)
    writer.flush()
    # Finished before, or asked to report on more batches than an epoch's check (a sweep compares runs by it).
    if not epoch_logs or config.final_eval_batches:
        valid_loss, valid_acc, images = run.evaluate(config.final_eval_batches)
        epoch_logs.update(valid_loss=valid_loss, valid_accuracy=valid_acc, valid_images=images)
    genotype = run.model.genotype()
    normal, _, reduce, _ = run.model.mixing_weights()
    summary = {'genotype': str(genotype), 'genotype_json': json.loads(genotype.to_json()),
               'genotype_id': search_space.genotype_id(genotype), 'method': config.method, 'order': config.order,
               'epochs': config.epochs, 'steps': run.global_step, 'steps_per_epoch': run.steps_per_epoch,
               'final_eval_batches': config.final_eval_batches,
               'supernet_train_accuracy': epoch_logs.get('train_accuracy'),
               'supernet_valid_accuracy': epoch_logs['valid_accuracy'],
               'supernet_valid_loss': epoch_logs['valid_loss'], 'supernet_valid_images': epoch_logs['valid_images'],
               'seconds': float(run.seconds.numpy()),
               'replicas': run.strategy.num_replicas_in_sync,
               'softmax_alpha_normal': np.round(np.asarray(normal), 4).tolist(),
               'softmax_alpha_reduce': np.round(np.asarray(reduce), 4).tolist()}
    if arch_loss is None:
        if measure_latency and (run.objective.latency is not None or run.objective.flops is not None):
            log(f'timing the derived network ({run.objective.setting.key}) on the latency target')
        summary['latency'] = run.objective.report(genotype, measure_latency)
    save_outputs(model_dir, genotype, summary)
    return summary
