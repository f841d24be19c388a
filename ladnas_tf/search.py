"""The differentiable search loop (DARTS / PC-DARTS): run, watch, resume, scale out.

The training split is cut into the weight half and the architecture half (train_portion). Each epoch
walks the weight half in a seeded order; the architecture batches come from one persistent stream
over the architecture half that runs on across epochs. After each epoch the supernet is evaluated
on the architecture half (BN's moving statistics, as DARTS's infer) and the genotype is derived and
logged.

A run directory holds: config.json (the effective settings), checkpoints/ (tf.train.CheckpointManager:
weights, alpha, beta, both optimizers, the step and the data position), tensorboard/ (losses,
accuracies, learning rates, softmax(alpha) heatmaps, the genotype as text), genotype.json, cells/
(DOT drawings of both cells and PNGs, by graphviz or else matplotlib) and summary.json. A run killed at any
moment and restarted with the same settings resumes at the last checkpoint and, with its seeds,
replays the same data in the same order: it ends with the same genotype as an uninterrupted run.
"""
import dataclasses
import json
import os
import shutil
import time

import numpy as np
import tensorflow as tf

from ladnas_tf import architect as architect_lib, distribute, objective, run_dir, search_space, supernet
from ladnas_tf.bad_input import BadInput
from ladnas_tf.cost import errors
from ladnas_tf.graph.setting import SettingError
from ladnas_tf.lpm import model as lpm_lib, registry
from ladnas_tf.profiling import profiler
from ladnas_tf.profiling.targets import registry as targets
from ladnas_tf.profiling.targets.base import NUMERIC_FORMATS, numeric_format
from ladnas_tf.settings import nested, option
from ladnas_tf.visualize import alpha_image, save_cell_drawing

METHODS = ('darts', 'pcdarts')
CONFIG_FILE = 'config.json'
SUMMARY_FILE = 'summary.json'
OUTPUTS = (CONFIG_FILE, 'checkpoints', 'tensorboard', 'genotype.json', 'cells', SUMMARY_FILE, 'flags.cfg')
DEFAULT_LPM = 'cpu_tflite_cifar'
# The shipped predictor of each numeric format: an int8 deployment with the default --lpm searches with its own.
DEFAULT_LPMS = {'float32': DEFAULT_LPM, 'int8': 'cpu_tflite_int8_cifar'}
PREDICTOR_FIELDS = ('lpm_dir', 'latency_error_lpm')


class SearchError(BadInput):
    """A search that cannot run as asked; the message is one line naming the problem."""


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Every setting that shapes a search's result (a resume must match all of them). The defaults are
    the quick search (the built-in digits, a tiny supernet, minutes on a CPU); the paper's settings are
    configs/search_*.cfg. lpm_dir and latency_error_lpm hold a predictor's name or directory as given;
    load_predictors() is the one way from them to the predictors (lpm.registry.load)."""
    dataset: str = option('digits', "digits (built in), cifar10, imagenet2012, or an image folder's path.")
    data_dir: str = option(None, 'tfds data_dir (or the folder of dataset=folder).')
    method: str = option('darts', 'DARTS, or PC-DARTS (partial channels + edge normalisation).', choices=METHODS)
    architect: architect_lib.ArchitectConfig = nested(architect_lib.ArchitectConfig,
                                                      'The bi-level optimisation.', prefix='')
    epochs: int = option(4, 'Search epochs.')
    batch_size: int = option(32, 'Global batch size of both halves.')
    channels: int = option(8, 'Initial channels C of the supernet.')
    layers: int = option(5, 'Cells of the supernet.')
    image_size: int = option(None, "Input side (default: the dataset's own; digits 16).")
    partial_channels: int = option(4, "PC-DARTS's K: 1/K of the channels go through the ops.")
    warmup_epochs: int = option(0, 'Epochs with alpha frozen (PC-DARTS: 15).')
    recompute: bool = option(False, "Re-run each mixed op's forward pass for its gradient (gradient "
                              'checkpointing): ~0.65x the memory above import for ~1.2x the step time.')
    train_portion: float = option(0.5, 'Share of the training split in the weight half.')
    seed: int = option(0, 'Seed of initialisation, split, shuffling and augmentation.')
    max_steps_per_epoch: int = option(None, 'Cap on steps and evaluation batches per epoch.')
    final_eval_batches: int = option(None, 'Batches of the final, reported supernet evaluation '
                                      "(default: --max_steps_per_epoch's cap).")
    augment: bool = option(True, "DARTS's crop + flip on the training batches (never on the digits).")
    # The latency term of Eq. 3 or the FLOPs baseline, both in units of DARTS_V2's cost.
    lambda_: float = option(0.1, "Weight of LAT(alpha) in units of DARTS_V2's predicted latency "
                             '(paper Eq. 3; 0 = plain).')
    eta: float = option(0.0, "Weight of FLOPs(alpha) in units of DARTS_V2's MACs: the FLOPs-aware "
                         'baseline (needs --lambda_=0).')
    lpm_dir: str = option(DEFAULT_LPM, 'The latency predictor of the target: a name (python -m tools.lpms '
                           'lists them) or an LPM directory (default: the shipped CPU TFLite one; empty: none).',
                           flag='lpm')
    target_latency_ms: float = option(None, "Adapt lambda_ (dual ascent) so that the derived genotype's "
                                       'predicted latency meets this target.')
    lat_samples: int = option(20, 'M: sub-networks sampled per LAT(alpha) estimate.')
    # What the search believes in place of the LPM (cost/errors.py).
    latency_error: str = option('none', 'What the search believes in place of the LPM (summary.json '
                                 'reports the true prediction).', choices=errors.KINDS)
    latency_error_size: float = option(
        0.0, 'additive: sigma (ms) of N(0, sigma) added to LAT(alpha), which does not change d LAT/d alpha '
        "(the search stays the same); multiplicative: sigma of e in each sampled sub-network's prediction "
        'x (1 + e), fresh per sample and step; systematic: the MRE (0.1 = 10%) of a fixed '
        'architecture-dependent error against the LPM.')
    latency_error_lpm: str = option(None, '--latency_error=predictor: the worse LPM the search reads (a '
                                     'name or a directory, as --lpm).')
    # The file the searched network ships as: its latency is what the predictor must have learnt.
    deploy_format: str = option(None, 'The numeric format of the deployed network, float32 or int8 (default: the '
                                "predictor's). int8 with the default --lpm searches with cpu_tflite_int8_cifar; a "
                                'predictor of another format is refused unless --force_format.',
                                choices=(None,) + NUMERIC_FORMATS)
    force_format: bool = option(False, 'Search with a predictor whose numeric format is not --deploy_format.')

    def to_json(self):
        """The settings as a flat dict (the architect's beside the others, as config.json holds them)."""
        settings = dataclasses.asdict(self)
        return {**settings.pop('architect'), **settings}

    @classmethod
    def from_json(cls, settings):
        names = {f.name for f in dataclasses.fields(architect_lib.ArchitectConfig)}
        inner = {k: v for k, v in settings.items() if k in names}
        return cls(architect=architect_lib.ArchitectConfig(**inner),
                   **{k: v for k, v in settings.items() if k not in names})

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
        if self.recompute and self.architect.order == 'second':
            raise SearchError('recompute supports the first-order search only (the unrolled step '
                              'substitutes the weights, which a recomputed pass would not see)')
        if self.deploy_format not in (None,) + NUMERIC_FORMATS:
            raise SearchError(f'unknown deploy_format {self.deploy_format!r} (known: {", ".join(NUMERIC_FORMATS)})')
        for value in ((None if self.eta else self.predictor_name()), self.latency_error_lpm):
            _check_predictor_name(value)
        try:
            objective.check(self.lambda_, self.eta, self.predictor_name(), self.target_latency_ms, self.lat_samples,
                            self.latency_error_spec())
        except objective.ObjectiveError as e:
            raise SearchError(str(e)) from None

    def predictor_name(self):
        """The predictor the latency term reads (a name or a directory), None for none: lpm_dir, except that
        an int8 deployment with the default predictor reads the shipped int8 one."""
        if self.lpm_dir == DEFAULT_LPM and self.deploy_format:
            return DEFAULT_LPMS[self.deploy_format]
        return self.lpm_dir or None

    def load_predictors(self):
        """(the LPM, the worse LPM that latency_error predictor reads), each None when unused: loaded
        once per run (the worse one for the LPM's target and setting). An LPM of another numeric format
        than deploy_format is refused unless force_format."""
        if not self.predictor_name() or self.eta:
            return None, None
        try:
            predictor = registry.load(self.predictor_name())
            worse = (registry.load(self.latency_error_lpm, target=predictor.metadata['target'],
                                   setting=predictor.metadata['setting'])
                     if self.latency_error == 'predictor' else None)
        except lpm_lib.LPMError as e:
            raise SearchError(_predictor_error_text(self.predictor_name(), e)) from None
        self._check_format(predictor)
        return predictor, worse

    def _check_format(self, predictor):
        have = numeric_format(predictor.target_description)
        if self.deploy_format and have != self.deploy_format and not self.force_format:
            raise SearchError(f'{self.predictor_name()} predicts {have} latency, the deployment is '
                              f'{self.deploy_format}: give a {self.deploy_format} predictor (--lpm) or pass '
                              '--force_format')

    def objective(self, predictors=None):
        """The architecture objective these settings ask for; predictors: load_predictors()'s pair
        (default: loaded here)."""
        predictor, worse = predictors or self.load_predictors()
        try:
            return objective.Objective(self.lambda_, self.eta, predictor, self.target_latency_ms,
                                       self.lat_samples, self.latency_error_spec(), self.seed,
                                       worse_predictor=worse, eval_target=self.eval_target())
        except (objective.ObjectiveError, SettingError) as e:
            raise SearchError(str(e)) from None

    def eval_target(self):
        """Where a search without a predictor (the FLOPs baseline) times its derived network: the CPU,
        in the deployment's numeric format."""
        return {'target': 'cpu_tflite_int8' if self.deploy_format == 'int8' else 'cpu_tflite'}

    @property
    def k(self):
        return self.partial_channels if self.method == 'pcdarts' else 1


def _check_predictor_name(value):
    """A predictor's name must be known (one line, before anything runs); a directory is read when loaded."""
    if value and not registry.looks_like_path(value):
        try:
            registry.resolve(value)
        except registry.RegistryError as e:
            raise SearchError(_predictor_error_text(value, e)) from None


def _predictor_error_text(name, error):
    """The registry's words, or for the shipped int8 predictor while it is not installed what to do instead."""
    if name == DEFAULT_LPMS['int8'] and name not in registry.known():
        return (f'the int8 deployment needs an int8 predictor and {name} is not installed here: give one '
                'with --lpm (python -m tools.lpms lists them)')
    return str(error)


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
        self._iterator = distribute.split_batches(self.strategy, ds)

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
# Settings recorded after run directories were first written -> what an older config.json implies.
ADDED = {'arch_beta_1': 0.5, 'arch_beta_2': 0.999, 'unrolled_radius': 0.01,
         'lpm_dir_sha256': run_dir.ANY, 'latency_error_lpm_sha256': run_dir.ANY,
         'deploy_format': None, 'force_format': False}


def run_settings(config):
    """What identifies a search in its run directory: the settings, its LPM(s) by directory (a name is
    recorded as the directory it stands for, as config.json always held) and by content."""
    settings = config.to_json()
    settings['lpm_dir'] = (config.lpm_dir if config.eta else config.predictor_name()) or None
    for key in PREDICTOR_FIELDS:
        settings[key] = settings[key] or None
        if settings[key]:
            settings[key] = registry.resolve(settings[key])
            settings[key + '_sha256'] = lpm_lib.content_sha256(settings[key])
    return settings


def settings_differ(saved, settings):
    """The keys whose values differ between a run directory's config.json and run_settings(config); a
    run directory from before LPM hashes were recorded is judged on the LPM's path alone."""
    return run_dir.differing_settings(saved, settings, REPORT_ONLY, ADDED)


def prepare_run_dir(model_dir, config, overwrite=False):
    """True when model_dir holds a search of this very config to resume; False for a fresh one.
    A directory of anything else is refused unless overwrite, which removes our outputs from it."""
    return run_dir.prepare(model_dir, run_settings(config), CONFIG_FILE, OUTPUTS, overwrite, REPORT_ONLY, ADDED,
                           what='search', error=SearchError)


# ---- summaries ----

def log_architecture(writer, model, step):
    """softmax(alpha) (and normalised beta) heatmaps and the genotype as text; returns the genotype."""
    normal, beta_normal, reduce, beta_reduce = (None if t is None else np.asarray(t)
                                                for t in model.mixing_weights())
    genotype = model.genotype()
    with writer.as_default():
        run_dir.write_image('alpha/normal', alpha_image(normal), step)
        run_dir.write_image('alpha/reduce', alpha_image(reduce), step)
        if beta_normal is not None:
            run_dir.write_image('beta/normal_reduce', alpha_image(np.stack([beta_normal, beta_reduce], 1)), step)
        run_dir.write_record('genotype', tf.constant(str(genotype)), step, 'text')
    writer.flush()
    return genotype


def _finished_summary(model_dir, config):
    """The summary of a finished search reported as this config asks (same final_eval_batches), else None."""
    summary = run_dir.read_json_or_none(os.path.join(model_dir, SUMMARY_FILE))
    if summary is None:
        return None
    same_report = summary.get('final_eval_batches') == config.final_eval_batches
    return summary if same_report and summary.get('epochs') == config.epochs else None


def save_outputs(model_dir, genotype, summary):
    run_dir.write_json(os.path.join(model_dir, 'genotype.json'), json.loads(genotype.to_json()))
    for name in ('normal', 'reduce'):
        save_cell_drawing(getattr(genotype, name), os.path.join(model_dir, 'cells', name), title=f'{name} cell')
    run_dir.write_json(os.path.join(model_dir, SUMMARY_FILE), summary)


# ---- the search ----

class Search:
    """A supernet, its Architect, the architecture objective, the loop state and its checkpoint.
    arch_loss: an ArchLoss replacing the one the settings ask for (tests, experiments)."""

    def __init__(self, config, data, strategy=None, arch_loss=None, predictors=None):
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
            self.objective = config.objective(predictors)
            arch_loss = arch_loss if arch_loss is not None else self.objective.arch_loss
            self.architect = architect_lib.Architect(self.model, config.architect, self.steps_per_epoch,
                                                     config.epochs, arch_loss, self.strategy)
        # Loop bookkeeping: plain variables, outside the strategy.
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name='epoch')
        self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name='epoch_step')
        self.arch_position = tf.Variable([0, 0], dtype=tf.int64, trainable=False, name='arch_position')
        # loss sum, correct, count, arch loss sum, arch steps of the current epoch; seconds so far
        self.sums = tf.Variable(tf.zeros([5], tf.float64), trainable=False, name='epoch_sums')
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name='seconds')
        state = dict(weight_optimizer=self.architect.weight_optimizer, arch_optimizer=self.architect.arch_optimizer,
                     epoch=self.epoch, epoch_step=self.epoch_step, arch_position=self.arch_position,
                     epoch_sums=self.sums, seconds=self.seconds,
                     objective=tf.train.Checkpoint(**self.objective.variables()))
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, model_weights=run_dir.named_variables(self.model), **state)
        # Checkpoints written before the weights were keyed by name held them by list position.
        self.positional_checkpoint = tf.train.Checkpoint(
            model=self.model, model_weights=list(self.model.weights), **state)

    @property
    def global_step(self):
        return int(self.architect.weight_optimizer.iterations.numpy())  # .numpy(): a MirroredVariable too

    def restore(self, path):
        """Restores the checkpoint at path (.../ckpt-N); True when one was restored."""
        return run_dir.restore(self.checkpoint, None, path, error=SearchError,
                               fallback=self.positional_checkpoint) is not None

    def evaluate(self, limit=None):
        """(loss, top-1 %, images) of the supernet on the architecture half, at most `limit` batches
        (None: the epochs' cap)."""
        totals = np.zeros(3)
        limit = limit or self.config.max_steps_per_epoch
        for i, batch in enumerate(distribute.split_batches(self.strategy, self.data.evaluation())):
            if limit is not None and i >= limit:
                break
            logs = self.architect.evaluate(batch)
            totals += [logs['loss_sum'], logs['correct'], logs['count']]
        count = max(totals[2], 1)
        return totals[0] / count, 100 * totals[1] / count, int(totals[2])

    def run_epoch(self, manager, writer, checkpoint_every, progress, log, step_callback=None):
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
        for batch in distribute.split_batches(self.strategy, ds):
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
            run_dir.write_scalars(writer, step, scalars)
            if bar is not None:
                s = self.sums.numpy()
                bar.update(int(self.epoch_step), [('loss', s[0] / max(int(self.epoch_step), 1)),
                                                  ('acc', 100 * s[1] / max(s[2], 1)), ('lr', lr)]
                           + ([('arch_loss', s[3] / s[4])] if s[4] else []))
            due = time.time() - last_save >= checkpoint_every  # decided together: every worker saves at this step
            if checkpoint_every and distribute.any_worker(self.strategy, due):
                self.seconds.assign_add(time.time() - tic)
                tic = last_save = time.time()
                manager.save(checkpoint_number=step)
            if step_callback is not None:
                step_callback(step)
        s = self.sums.numpy()
        train_loss, train_acc = s[0] / max(self.steps_per_epoch, 1), 100 * s[1] / max(s[2], 1)
        valid_loss, valid_acc, valid_images = self.evaluate()
        genotype = log_architecture(writer, self.model, self.global_step)
        run_dir.write_scalars(writer, self.global_step, {
            'epoch/train_loss': train_loss, 'epoch/train_accuracy': train_acc, 'epoch/valid_loss': valid_loss,
            'epoch/valid_accuracy': valid_acc})
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


def latency_report(goal, genotype, measure=True, log=print, devices=None):
    """The objective's report on the derived genotype (its predicted latency, the term's state) and,
    when `measure` and this machine can time on the predictor's device, its latency measured there as
    the profiler times a table row (bracketed by DARTS_V2), with its params and MACs: each figure also as
    a multiple of DARTS_V2 on the device it was made on, which is named (objective.comparison_text). A
    remote device is reached only if the user named it on this machine (`devices`: from the tool's flags,
    or registered: targets.target_of); otherwise the report says why it was not timed (`not_measured`)."""
    report = goal.report(genotype)
    if not measure or not report:
        return report
    target, why = targets.reachable(goal.target_description(), devices)
    if target is None:
        log(f'not timing the derived network: {why}')
        report['not_measured'] = why
        return report
    log(f'timing the derived network ({goal.setting.key}) on the latency target')
    measured = profiler.measure_genotype(target, goal.setting, genotype)
    report.update(objective.measured_report(measured, target.describe()))
    return report


def search(config, model_dir, overwrite=False, strategy=None, data=None, arch_loss=None,
           checkpoint_every=300, progress=True, flags_text=None, log=print, measure_latency=True,
           step_callback=None, predictors=None):
    """Runs (or resumes, or just reports a finished) search; returns the summary dict.

    data: a SearchData (default: load_search_data(config)); arch_loss: an architect.ArchLoss replacing
    the settings' objective; checkpoint_every: seconds between mid-epoch checkpoints (0: only at epoch
    ends); measure_latency: time the derived network on the predictor's target for the summary, when
    this machine can reach it (latency_report);
    step_callback(global_step), when given, runs after every step (and its checkpoint, if any);
    predictors: config.load_predictors()'s pair, when the caller has loaded it (default: loaded here).
    Under a multi-worker strategy every worker calls this alike; only the chief writes model_dir
    (distribute.py), the others restore from it and return the same summary."""
    config.check()
    strategy = strategy or tf.distribute.get_strategy()
    chief = distribute.is_chief(strategy)
    if predictors is None:  # a bad predictor fails before any write, as bad data does
        predictors = config.load_predictors()
    data = data if data is not None else load_search_data(config)
    existed = os.path.isdir(model_dir) and bool(os.listdir(model_dir))
    if chief:
        resume = prepare_run_dir(model_dir, config, overwrite)
    else:  # read only: the chief prepares (and with overwrite empties) the directory
        saved = run_dir.read_json_or_none(os.path.join(model_dir, CONFIG_FILE))
        resume = not overwrite and isinstance(saved, dict) and not settings_differ(saved, run_settings(config))
    finished = _finished_summary(model_dir, config) if resume else None
    if finished is not None:  # the same command again: nothing to do, nothing rewritten
        log(f'{model_dir}: this search is finished; its summary.json stands')
        return finished
    try:
        if flags_text is not None and chief:
            with open(os.path.join(model_dir, 'flags.cfg'), 'w') as f:
                f.write(flags_text)
        run = Search(config, data, strategy, arch_loss, predictors)
    except BaseException:
        if not existed and chief:  # a run that fails before its first step leaves nothing behind
            shutil.rmtree(model_dir, ignore_errors=True)
        raise
    with distribute.write_dir(model_dir, strategy) as out_dir:
        if not chief:
            log(f'{distribute.task_name(strategy)}: the chief writes {model_dir}; checkpoints of this worker go '
                f'to {out_dir} (removed at the end)')
        manager = run_dir.checkpoint_manager(run.checkpoint, out_dir)
        # Every worker restores the chief's checkpoint (none after the chief's --overwrite).
        latest = tf.train.latest_checkpoint(os.path.join(model_dir, run_dir.CHECKPOINTS)) if resume else None
        if latest and run.restore(latest):
            log(f'resumed {model_dir} at epoch {int(run.epoch) + 1}, step {int(run.epoch_step)} of '
                f'{run.steps_per_epoch}')
        elif resume:
            log(f'{model_dir}: settings match but no checkpoint yet; starting over')
        writer = run_dir.summary_writer(model_dir, 'tensorboard') if chief else tf.summary.create_noop_writer()
        epoch_logs = {}
        while int(run.epoch) < config.epochs:
            epoch_logs = run.run_epoch(manager, writer, checkpoint_every, progress, log, step_callback)
        writer.flush()
    # Finished before, or asked to report on more batches than an epoch's check (a sweep compares runs by it).
    if not epoch_logs or config.final_eval_batches:
        valid_loss, valid_acc, images = run.evaluate(config.final_eval_batches)
        epoch_logs.update(valid_loss=valid_loss, valid_accuracy=valid_acc, valid_images=images)
    genotype = run.model.genotype()
    normal, _, reduce, _ = run.model.mixing_weights()
    summary = {'genotype': str(genotype), 'genotype_json': json.loads(genotype.to_json()),
               'genotype_id': search_space.genotype_id(genotype), 'method': config.method,
               'order': config.architect.order,
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
        summary['latency'] = latency_report(run.objective, genotype, measure_latency and chief, log)
    if chief:
        save_outputs(model_dir, genotype, summary)
    distribute.barrier(strategy)
    return summary
