"""Training an evaluation network from scratch: the DARTS CIFAR-10 and ImageNet recipes (the paper,
section 4), with checkpoints, resume, TensorBoard, tf.distribute and TFLite accuracy.

A custom loop rather than model.fit: the auxiliary head adds a second output that only the loss sees,
and DARTS's update (clip the global gradient norm, then PyTorch's SGD: coupled weight decay and its
momentum rule, optim.MomentumSGD, the search's optimizer too) is not what Keras's optimizer options do
(its weight decay is decoupled, its momentum folds in the learning rate, its clipping is per replica).

Model selection is honest: best.keras is chosen on a validation split held out of the training data
(validation_fraction; 0 means no best.keras), never on the test split, which is evaluated once per
epoch for reporting only. summary.json names the split of every figure.

Resume: checkpoints at epoch ends and every checkpoint_every seconds inside an epoch hold the weights,
the drop-path random state, the optimizer and the position in the epoch; the data of an epoch is a
function of (seed, epoch), so a killed run resumed with the same call ends with the weights of an
uninterrupted one (with TensorFlow's op determinism on, as tools.train sets it).

Batch size and learning rate are *global*: the rate is the one for the global batch, whatever the
number of replicas (each replica sees batch_size / replicas examples; the gradients are summed
across replicas and divided by the global batch).
"""
import dataclasses
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from ladnas_tf import data, distribute, network, optim, run_dir, search_space
from ladnas_tf.bad_input import BadInput
from ladnas_tf.settings import option

SCHEDULES = ('cosine', 'linear')
RUN_CONFIG = 'run_config.json'
SUMMARY = 'summary.json'
HISTORY = 'history.json'
ELAPSED = 'elapsed.json'
LOGS = 'logs'
OUTPUTS = (RUN_CONFIG, run_dir.CHECKPOINTS, LOGS, HISTORY, ELAPSED, 'best.keras', 'final.keras', SUMMARY,
           'model_float32.tflite', 'model_int8.tflite', 'model_float32.json', 'model_int8.json')


class TrainError(BadInput):
    """A run that cannot start or continue as asked; the message is one line naming the problem."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights. batch_size and learning_rate are global. The
    defaults are DARTS's CIFAR-10 recipe."""
    setting: str = option('cifar', 'Network: cifar or imagenet (stem, aux head).', choices=network.SETTINGS)
    channels: int = option(36, 'Initial channels C.')
    layers: int = option(20, 'Number of cells.')
    image_size: int = option(None, "Input side (default: the dataset's own).")
    epochs: int = option(600, 'Epochs.')
    batch_size: int = option(96, 'Global batch size (split over the replicas).')
    learning_rate: float = option(0.025, 'Peak learning rate for the global batch.')
    lr_schedule: str = option('cosine', 'cosine to 0, or linear decay to 0.', choices=SCHEDULES)
    warmup_epochs: int = option(0, 'Epochs of linear warm-up.')
    momentum: float = option(0.9, 'SGD momentum.')
    weight_decay: float = option(3e-4, 'Coupled L2 weight decay (added to the gradients).')
    grad_clip: float = option(5.0, 'Global gradient-norm clip (0 = off).')
    auxiliary: bool = option(True, 'Train with the auxiliary head.')
    auxiliary_weight: float = option(0.4, 'Weight of the auxiliary loss.')
    drop_path_prob: float = option(0.2, 'Final drop-path rate, ramped linearly from 0.')
    cutout: int = option(16, 'Cutout length (0 = off).')
    label_smoothing: float = option(0.0, 'Label smoothing epsilon.')
    augment: str = option('cifar', 'Training augmentation: DARTS CIFAR crop+flip, the ImageNet view '
                           '(random-resized crop 224, flip, colour jitter), or none.', choices=data.AUGMENTATIONS)
    validation_fraction: float = option(0.0, 'Share of the training split held out to choose best.keras '
                                         '(0: no best.keras; the test split never chooses).')
    seed: int = option(0, 'Seed of initialisation, shuffling and augmentation.')

    def check(self):
        positive = ('channels', 'layers', 'epochs', 'batch_size')
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainError(f'{name} must be a positive int, got {value!r}')
        if self.setting not in network.SETTINGS:
            raise TrainError(f'unknown setting {self.setting!r} (known: {", ".join(network.SETTINGS)})')
        if self.lr_schedule not in SCHEDULES:
            raise TrainError(f'unknown lr_schedule {self.lr_schedule!r} (known: {", ".join(SCHEDULES)})')
        if not self.learning_rate > 0:
            raise TrainError(f'learning_rate must be positive, got {self.learning_rate}')
        if not 0 <= self.warmup_epochs < self.epochs:
            raise TrainError(f'warmup_epochs must lie in [0, epochs), got {self.warmup_epochs}')
        for name in ('momentum', 'label_smoothing', 'drop_path_prob'):
            if not 0 <= getattr(self, name) < 1:
                raise TrainError(f'{name} must lie in [0, 1), got {getattr(self, name)}')
        for name in ('weight_decay', 'grad_clip', 'auxiliary_weight', 'cutout'):
            if getattr(self, name) < 0:
                raise TrainError(f'{name} must be >= 0, got {getattr(self, name)}')
        if not 0 <= self.validation_fraction < 1:
            raise TrainError(f'validation_fraction must lie in [0, 1), got {self.validation_fraction}')
        if self.augment not in data.AUGMENTATIONS:
            raise TrainError(f"unknown augment {self.augment!r} (known: 'cifar', 'imagenet', None)")


# DARTS's train.py (CIFAR-10) and PC-DARTS's train_imagenet.py as the paper reports it (section 4.2);
# the sources of every setting: configs/train_cifar10.cfg and configs/train_imagenet.cfg.
CIFAR_RECIPE = Recipe()
IMAGENET_RECIPE = Recipe(setting='imagenet', channels=48, layers=14, epochs=250, batch_size=1024,
                         learning_rate=0.5, lr_schedule='linear', warmup_epochs=5, weight_decay=3e-5,
                         drop_path_prob=0.0, cutout=0, label_smoothing=0.1, augment='imagenet')


# ---- the recipe pieces, as small pure functions ----

def learning_rate(step, base_lr, total_steps, schedule='cosine', warmup_steps=0):
    """The rate at optimizer step `step` (a Python number or a tensor), per step.

    cosine: base_lr * (1 + cos(pi * step / total)) / 2, down to 0 at total_steps (DARTS CIFAR).
    linear: a linear warm-up from base_lr / warmup_steps to base_lr over warmup_steps, then a linear
    decay to 0 at total_steps (the paper's ImageNet recipe). A warm-up applies to cosine too."""
    step = tf.minimum(tf.cast(step, tf.float32), float(total_steps))
    if schedule == 'cosine':
        decayed = 0.5 * base_lr * (1.0 + tf.cos(math.pi * step / total_steps))
    elif schedule == 'linear':
        span = max(total_steps - warmup_steps, 1)
        decayed = base_lr * (total_steps - step) / span
    else:
        raise TrainError(f'unknown lr_schedule {schedule!r} (known: {", ".join(SCHEDULES)})')
    if warmup_steps:
        decayed = tf.where(step < warmup_steps, base_lr * (step + 1.0) / warmup_steps, decayed)
    return decayed


@keras.saving.register_keras_serializable('ladnas_tf')
class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """learning_rate() as the optimizer's schedule: it follows optimizer.iterations, which the
    checkpoint keeps, so a resumed run continues the schedule where it stopped."""

    def __init__(self, base_lr, total_steps, schedule='cosine', warmup_steps=0):
        self.base_lr, self.total_steps = base_lr, total_steps
        self.schedule, self.warmup_steps = schedule, warmup_steps

    def __call__(self, step):
        return learning_rate(step, self.base_lr, self.total_steps, self.schedule, self.warmup_steps)

    def get_config(self):
        return {'base_lr': self.base_lr, 'total_steps': self.total_steps, 'schedule': self.schedule,
                'warmup_steps': self.warmup_steps}


def drop_path_rate(epoch, drop_path_prob, epochs):
    """DARTS's linear ramp: drop_path_prob * epoch / epochs for epoch 0, 1, ... (0 at the start)."""
    return drop_path_prob * epoch / epochs


def classification_loss(labels, logits, aux_logits=None, auxiliary_weight=0.4, label_smoothing=0.0):
    """Per-example loss: cross-entropy against (1 - eps) * one-hot + eps / K targets, plus
    auxiliary_weight times the same on the auxiliary logits when given."""
    num_classes = logits.shape[-1]
    targets = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    loss = tf.nn.softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32))
    if aux_logits is not None:
        loss += auxiliary_weight * tf.nn.softmax_cross_entropy_with_logits(
            targets, tf.cast(aux_logits, tf.float32))
    return loss


def top_k_correct(labels, logits, k):
    return tf.reduce_sum(tf.cast(tf.math.in_top_k(tf.cast(labels, tf.int32), logits, k), tf.float32))


# ---- one training step, the same under any strategy ----

def gradients(model, images, labels, recipe, global_batch):
    """(loss, number correct, gradients) of one replica's share: the loss summed over the share and
    divided by the global batch, so summing over replicas gives the global mean."""
    with tf.GradientTape() as tape:
        outputs = model(images, training=True)
        logits, aux = outputs if isinstance(outputs, (tuple, list)) else (outputs, None)
        per_example = classification_loss(labels, logits, aux, recipe.auxiliary_weight,
                                          recipe.label_smoothing)
        loss = tf.reduce_sum(per_example) / global_batch
    return loss, top_k_correct(labels, logits, 1), tape.gradient(loss, model.trainable_variables)


def apply_update(model, optimizer, grads, recipe):
    """DARTS's update from one replica's gradients: sum across replicas, clip the global norm, then
    the optimizer (optim.MomentumSGD: + weight_decay * w, PyTorch's momentum). Keras's optimizer sums
    across replicas itself, so the already summed gradient is handed to it divided by the replica
    count."""
    context = tf.distribute.get_replica_context()
    grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    if recipe.grad_clip:
        grads, _ = tf.clip_by_global_norm(grads, recipe.grad_clip)
    variables = model.trainable_variables
    replicas = float(context.num_replicas_in_sync)
    optimizer.apply_gradients([(g / replicas, v) for g, v in zip(grads, variables)])


def _check_auxiliary(recipe, image_size):
    """The auxiliary head pools 5x5 the map after the second reduction: it must be at least 5x5."""
    side = image_size
    for _ in range(2 + (3 if recipe.setting == 'imagenet' else 0)):  # ImageNet's stem halves 3 times
        side = math.ceil(side / 2)
    if recipe.auxiliary and side < 5:
        raise TrainError(f'the auxiliary head needs a map of at least 5x5 after the second reduction; '
                         f'{image_size}x{image_size} images give {side}x{side} (use a larger image_size '
                         f'or no auxiliary head)')


def make_optimizer(recipe, steps_per_epoch):
    """PyTorch's SGD (optim.MomentumSGD: momentum, coupled weight decay) on the recipe's schedule."""
    schedule = Schedule(recipe.learning_rate, recipe.epochs * steps_per_epoch, recipe.lr_schedule,
                        recipe.warmup_epochs * steps_per_epoch)
    return optim.MomentumSGD(schedule, recipe.momentum, recipe.weight_decay)


class Trainer:
    """A model, its optimizer and the distributed train step of a recipe."""

    def __init__(self, genotype, recipe, num_classes, image_size, steps_per_epoch, strategy=None):
        recipe.check()
        self.recipe, self.strategy = recipe, strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        if recipe.batch_size % self.replicas:
            raise TrainError(f'global batch {recipe.batch_size} does not split evenly over '
                             f'{self.replicas} replicas')
        _check_auxiliary(recipe, image_size)
        with self.strategy.scope():
            self.model = network.build_network(genotype, recipe.setting, recipe.channels, recipe.layers,
                                               num_classes, recipe.auxiliary, image_size, recipe.seed)
            self.optimizer = make_optimizer(recipe, steps_per_epoch)
            self.optimizer.build(self.model.trainable_variables)  # so a checkpoint restores into it
        # Bookkeeping of the loop, outside the scope: plain variables, not mirrored ones.
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name='epoch')
        self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name='epoch_step')
        self.sums = tf.Variable(tf.zeros([2], tf.float64), trainable=False, name='epoch_sums')  # loss, top-1
        self.best_top1 = tf.Variable(-1.0, dtype=tf.float32, trainable=False, name='best_validation_top1')
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name='best_epoch')
        # `variables`, not `weights`, so that the drop-path seed generators' states are kept and a
        # resumed run drops the same paths.
        state = dict(model=self.model, optimizer=self.optimizer, epoch=self.epoch, epoch_step=self.epoch_step,
                     epoch_sums=self.sums, best_validation_top1=self.best_top1, best_epoch=self.best_epoch)
        self.checkpoint = tf.train.Checkpoint(
            model_variables=run_dir.named_variables(self.model, self.model.variables), **state)
        # Checkpoints written before the variables were keyed by name held them by list position.
        self.positional_checkpoint = tf.train.Checkpoint(model_variables=list(self.model.variables), **state)
        self._step = tf.function(self._distributed_step)
        self._evaluate = tf.function(self._eval_step)

    def _replica_step(self, images, labels):
        loss, correct, grads = gradients(self.model, images, labels, self.recipe, self.recipe.batch_size)
        apply_update(self.model, self.optimizer, grads, self.recipe)
        return loss, correct

    def _distributed_step(self, images, labels):
        loss, correct = self.strategy.run(self._replica_step, args=(images, labels))
        reduce = lambda t: self.strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None)
        return reduce(loss), reduce(correct) / self.recipe.batch_size

    def train_step(self, images, labels):
        """One update on a global batch (or a distributed batch); returns (mean loss, top-1)."""
        return self._step(images, labels)

    def _eval_step(self, images, labels):
        logits = self.model(images, training=False)
        return top_k_correct(labels, logits, 1), top_k_correct(labels, logits, 5)

    def evaluate(self, dataset, batch_size):
        """(top-1, top-5) in percent over every example of dataset (a data.Dataset)."""
        top1 = top5 = 0.0
        for images, labels in data.batches(dataset, min(batch_size, dataset.num_examples), training=False):
            c1, c5 = self._evaluate(images, labels)
            top1, top5 = top1 + float(c1), top5 + float(c5)
        return 100 * top1 / dataset.num_examples, 100 * top5 / dataset.num_examples

    @property
    def global_step(self):
        """Optimizer steps so far (a mirrored variable under a strategy, hence the numpy())."""
        return int(self.optimizer.iterations.numpy())

    def current_lr(self):
        return float(self.optimizer.learning_rate)


# ---- a run directory ----

def run_config(genotype, recipe, dataset_name):
    """What a run directory was started with; a resume must match it exactly."""
    return {'genotype': str(genotype), 'genotype_id': search_space.genotype_id(genotype),
            'dataset': dataset_name, 'recipe': dataclasses.asdict(recipe)}


def prepare_run_dir(model_dir, config, overwrite=False):
    """Returns True when model_dir holds a run of this very config to resume; False for a fresh run.
    Anything else in it is refused unless overwrite, which removes our outputs first."""
    return run_dir.prepare(model_dir, config, RUN_CONFIG, OUTPUTS, overwrite, what='training run', error=TrainError)


def _save_keras(model, path):
    with run_dir.atomic_path(path) as temp:  # a kill mid-save leaves the previous file
        model.save(temp)


# The split each figure of summary.json (and history.json) is measured on.
SPLIT_OF = {'train_loss': 'train (augmented batches, mean over the epoch)',
            'train_top1': 'train (augmented batches, mean over the epoch)',
            'validation_top1': 'validation (held out of train)', 'validation_top5': 'validation (held out of train)',
            'best_validation_top1': 'validation (held out of train)',
            'test_top1': 'test (reported, chooses nothing)', 'test_top5': 'test (reported, chooses nothing)'}


def load_splits(dataset, data_dir, recipe):
    """(train, validation or None, test): validation is recipe.validation_fraction of the training
    split held out by a seeded permutation; the test split is the dataset's own."""
    full = data.load(dataset, 'train', data_dir, recipe.image_size)
    test = data.load(dataset, 'test', data_dir, recipe.image_size)
    if not recipe.validation_fraction:
        return full, None, test
    train_part, validation = data.validation_split(full, recipe.validation_fraction, recipe.seed)
    return train_part, validation, test


def train(genotype, recipe, model_dir, dataset='digits', data_dir=None, strategy=None, overwrite=False,
          verbose=1, log=print, checkpoint_every=600, step_callback=None):
    """Trains (or resumes) a run in model_dir; returns the summary written to summary.json.

    Writes run_config.json, checkpoints/ (every epoch, and every checkpoint_every seconds inside one;
    0: epoch ends only), logs/ (TensorBoard), history.json (every epoch's figures, split named),
    best.keras (the epoch of the best validation top-1; only with a validation_fraction), final.keras
    and summary.json. The test split is evaluated once per epoch and only reported. Rerunning the
    same call after a kill continues from the last checkpoint; a finished run is returned as it is.
    step_callback(global_step), when given, runs after every step (and its checkpoint, if any)."""
    recipe.check()
    search_space.validate(genotype)
    train_set, val_set, test_set = load_splits(dataset, data_dir, recipe)
    _check_auxiliary(recipe, train_set.image_size)
    if train_set.num_examples < recipe.batch_size:
        raise TrainError(f'batch size {recipe.batch_size} is larger than {dataset} train '
                         f'({train_set.num_examples} examples)')
    config = run_config(genotype, recipe, dataset)
    strategy = strategy or tf.distribute.get_strategy()
    chief = distribute.is_chief(strategy)
    if chief:
        resume = prepare_run_dir(model_dir, config, overwrite)
    else:  # read only: the chief prepares (and with overwrite empties) the directory
        saved = run_dir.read_json_or_none(os.path.join(model_dir, RUN_CONFIG))
        resume = not overwrite and isinstance(saved, dict) and not run_dir.differing_settings(saved, config)
    finished = run_dir.read_json_or_none(os.path.join(model_dir, SUMMARY)) if resume else None
    if finished is not None:
        log(f'{model_dir} holds a finished run; nothing to do')
        return finished

    steps = train_set.num_examples // recipe.batch_size
    keras.utils.set_random_seed(recipe.seed)
    trainer = Trainer(genotype, recipe, train_set.num_classes, train_set.image_size, steps, strategy)
    with distribute.write_dir(model_dir, strategy) as out_dir:
        return _train(trainer, genotype, dataset, model_dir, out_dir, chief, resume, train_set, val_set, test_set,
                      steps, checkpoint_every, step_callback, verbose, log)


def _train(trainer, genotype, dataset, model_dir, out_dir, chief, resume, train_set, val_set, test_set, steps,
           checkpoint_every, step_callback, verbose, log):
    """train()'s loop. out_dir: where this process writes checkpoints and models (the run directory on
    the chief, a temporary one elsewhere); every worker restores the chief's checkpoint."""
    recipe = trainer.recipe
    if not chief:
        log(f'{distribute.task_name(trainer.strategy)}: the chief writes {model_dir}; checkpoints and models of this '
            f'worker go to {out_dir} (removed at the end)')
    manager = run_dir.checkpoint_manager(trainer.checkpoint, out_dir)
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, run_dir.CHECKPOINTS)) if resume else None
    restored = latest and run_dir.restore(trainer.checkpoint, None, latest, error=TrainError,
                                          fallback=trainer.positional_checkpoint)
    if restored:
        log(f'resumed from {restored} after epoch {int(trainer.epoch)}, step {int(trainer.epoch_step)} of the next')
    writer = run_dir.summary_writer(model_dir, LOGS) if chief else tf.summary.create_noop_writer()
    elapsed_path, history_path = os.path.join(model_dir, ELAPSED), os.path.join(model_dir, HISTORY)
    elapsed = (run_dir.read_json_or_none(elapsed_path) or {'seconds': 0.0})['seconds']
    history = (run_dir.read_json_or_none(history_path) or [])[:int(trainer.epoch)]
    start = time.perf_counter()

    for epoch in range(int(trainer.epoch), recipe.epochs):
        lr = trainer.current_lr() if int(trainer.epoch_step) == 0 else None
        train_loss, train_top1 = _train_epoch(trainer, train_set, epoch, steps, manager, checkpoint_every,
                                              step_callback, verbose)
        figures = {'epoch': epoch + 1, 'train_loss': train_loss, 'train_top1': train_top1}
        if val_set is not None:
            figures['validation_top1'], figures['validation_top5'] = trainer.evaluate(val_set, recipe.batch_size)
        # Reported only: nothing below reads these two figures to choose or keep a model.
        figures['test_top1'], figures['test_top5'] = trainer.evaluate(test_set, recipe.batch_size)
        scalars = {f'{k.split("_")[0]}/{k.split("_", 1)[1]}': v for k, v in figures.items() if k != 'epoch'}
        run_dir.write_scalars(writer, epoch + 1, scalars | ({'train/lr': lr} if lr is not None else {}))
        log(f'epoch {epoch + 1}/{recipe.epochs}: loss {train_loss:.4f} train top-1 {train_top1:.2f}'
            + (f" validation top-1 {figures['validation_top1']:.2f}" if val_set is not None else '')
            + f" test top-1 {figures['test_top1']:.2f} top-5 {figures['test_top5']:.2f}")
        if val_set is not None and figures['validation_top1'] > float(trainer.best_top1):
            trainer.best_top1.assign(figures['validation_top1'])
            trainer.best_epoch.assign(epoch + 1)
            _save_keras(trainer.model, os.path.join(out_dir, 'best.keras'))
        history.append(figures)
        if chief:
            run_dir.write_json(history_path, history)
        trainer.epoch.assign(epoch + 1)
        trainer.epoch_step.assign(0)
        trainer.sums.assign(tf.zeros([2], tf.float64))
        manager.save(checkpoint_number=trainer.global_step)
        if chief:
            run_dir.write_json(elapsed_path, {'seconds': elapsed + time.perf_counter() - start})
    writer.flush()

    _save_keras(trainer.model, os.path.join(out_dir, 'final.keras'))
    last = history[-1] if len(history) == recipe.epochs else _final_figures(trainer, val_set, test_set, recipe)
    summary = {
        'genotype': str(genotype), 'genotype_id': search_space.genotype_id(genotype),
        'dataset': dataset, 'epochs': recipe.epochs,
        **{k: last.get(k) for k in ('train_loss', 'train_top1', 'validation_top1', 'validation_top5',
                                    'test_top1', 'test_top5')},
        'best_validation_top1': float(trainer.best_top1) if val_set is not None else None,
        'best_epoch': int(trainer.best_epoch) if val_set is not None else None,
        'selection': ('best.keras: the epoch of the best validation top-1; final.keras: the last epoch; '
                      'the test split chooses nothing' if val_set is not None else
                      'final.keras: the last epoch (no validation split, so no best.keras); the test split '
                      'chooses nothing'),
        'split_of': SPLIT_OF,
        'examples': {'train': train_set.num_examples, 'validation': val_set.num_examples if val_set else 0,
                     'test': test_set.num_examples},
        'params': trainer.model.count_eval_params(),
        'macs': trainer.model.count_macs(), 'image_size': train_set.image_size,
        'replicas': trainer.replicas, 'global_batch_size': recipe.batch_size,
        'per_replica_batch_size': recipe.batch_size // trainer.replicas,
        'learning_rate_for_global_batch': recipe.learning_rate,
        'seconds': round(elapsed + time.perf_counter() - start, 2), 'recipe': dataclasses.asdict(recipe)}
    if chief:
        write_summary(model_dir, summary)
    distribute.barrier(trainer.strategy)
    return summary


def _train_epoch(trainer, train_set, epoch, steps, manager, checkpoint_every, step_callback, verbose):
    """Runs epoch `epoch` from its checkpointed position; returns (mean loss, top-1 %) over it."""
    recipe = trainer.recipe
    trainer.model.set_drop_path_rate(drop_path_rate(epoch, recipe.drop_path_prob, recipe.epochs))
    done = int(trainer.epoch_step)
    batches = training_batches(train_set, recipe, epoch).skip(done)
    if trainer.replicas > 1:
        batches = distribute.split_batches(trainer.strategy, batches)
    bar = keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=['loss', 'top1'])
    last_save = time.time()
    for images, labels in batches:
        loss, top1 = trainer.train_step(images, labels)
        trainer.sums.assign_add([float(loss), float(top1)])
        done = int(trainer.epoch_step.assign_add(1))
        total_loss, total_top1 = trainer.sums.numpy()
        bar.update(done, [('loss', total_loss / done), ('top1', 100 * total_top1 / done)])
        due = time.time() - last_save >= checkpoint_every  # decided together: every worker saves at this step
        if checkpoint_every and done < steps and distribute.any_worker(trainer.strategy, due):
            manager.save(checkpoint_number=trainer.global_step)
            last_save = time.time()
        if step_callback is not None:
            step_callback(trainer.global_step)
    total_loss, total_top1 = trainer.sums.numpy()
    return float(total_loss / steps), float(100 * total_top1 / steps)


def _final_figures(trainer, val_set, test_set, recipe):
    """The final model's figures when the epochs ran before this call (a run killed after its last
    checkpoint and before its summary)."""
    figures = {}
    if val_set is not None:
        figures['validation_top1'], figures['validation_top5'] = trainer.evaluate(val_set, recipe.batch_size)
    figures['test_top1'], figures['test_top5'] = trainer.evaluate(test_set, recipe.batch_size)
    return figures


def write_summary(model_dir, summary):
    run_dir.write_json(os.path.join(model_dir, SUMMARY), summary)


def training_batches(dataset, recipe, epoch):
    """The recipe's augmented, shuffled global batches of one epoch. A pipeline per epoch, seeded by
    the epoch, so a resumed run sees the batches it would have seen."""
    return data.batches(dataset, recipe.batch_size, training=True, seed=recipe.seed * 100_003 + epoch,
                        augment=recipe.augment, cutout=recipe.cutout)


def representative_images(dataset, count, image_size, batch_size=32):
    """count normalised training images (un-augmented, in order) for int8 calibration."""
    if dataset.image_size != image_size:
        raise TrainError(f'representative images are {dataset.image_size}x{dataset.image_size}, '
                         f'the model takes {image_size}x{image_size}')
    images = []
    for batch, _ in data.batches(dataset, min(batch_size, dataset.num_examples), training=False):
        images.append(batch.numpy())
        if sum(len(b) for b in images) >= count:
            break
    return np.concatenate(images)[:count]


def tflite_accuracy(tflite_bytes, dataset, limit=None, batch_size=64, threads=1):
    """Top-1 (percent) of a batch-1 TFLite classifier over dataset (a data.Dataset; the first
    `limit` examples when given), run through the ai_edge_litert interpreter."""
    from ai_edge_litert.interpreter import Interpreter
    from ladnas_tf import export
    expected = Interpreter(model_content=tflite_bytes).get_input_details()[0]['shape']
    if tuple(expected[1:]) != (dataset.image_size, dataset.image_size, 3):
        raise TrainError(f'{dataset.name} images are {dataset.image_size}x{dataset.image_size}x3, '
                         f'the TFLite model takes {"x".join(map(str, expected[1:]))}')
    correct = seen = 0
    for images, labels in data.batches(dataset, min(batch_size, dataset.num_examples), training=False):
        if limit is not None:
            images, labels = images[:limit - seen], labels[:limit - seen]
        logits = export.run_tflite(tflite_bytes, images.numpy(), threads)
        correct += int(np.sum(logits.argmax(-1) == labels.numpy()))
        seen += len(labels)
        if limit is not None and seen >= limit:
            break
    return 100 * correct / seen


def export_tflite(model, model_dir, train_set, test_set, calibration_images=256, limit=None, overwrite=False):
    """model_float32.tflite and model_int8.tflite (post-training, calibrated on training images) in
    model_dir, each with export's summary JSON; returns {name: {file, file_bytes, test_top1}}."""
    from ladnas_tf import export
    representative = representative_images(train_set, calibration_images, model.image_size)
    results = {}
    for name, int8 in (('float32', False), ('int8', True)):
        path = os.path.join(model_dir, f'model_{name}.tflite')
        summary = export.export(model, path, int8, np.array_split(representative, 8) if int8 else None,
                                overwrite=overwrite)
        with open(path, 'rb') as f:
            top1 = tflite_accuracy(f.read(), test_set, limit)
        results[name] = {'file': os.path.basename(path), 'file_bytes': summary['file_bytes'],
                         'test_top1': top1}
    return results
