"""Training from scratch: the recipe pieces, a run's files, honest model selection (the test split
chooses nothing), resume after a kill ending as an uninterrupted run, 2 replicas, TFLite accuracy, and
one-line errors. Tiny: C=4, 3 cells, 16x16 images of a 4-class image folder."""
import json
import math
import os
import signal
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from ladnas_tf import data, genotypes, run_dir, train

SIZE, CLASSES, PER_CLASS = 16, 4, {'train': 16, 'test': 8}
TINY = train.Recipe(channels=4, layers=3, epochs=2, batch_size=16, learning_rate=0.05, auxiliary=False,
                    drop_path_prob=0.2, cutout=4)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    """A 4-class PNG folder (class k: a bright square in quadrant k, plus noise), learnable at once."""
    root = tmp_path_factory.mktemp('folder')
    rng = np.random.default_rng(0)
    for split, count in PER_CLASS.items():
        for k in range(CLASSES):
            os.makedirs(root / split / f'c{k}')
            for i in range(count):
                image = rng.integers(0, 60, (SIZE, SIZE, 3))
                r, c = divmod(k, 2)
                image[r * 8:r * 8 + 8, c * 8:c * 8 + 8] += 180
                png = tf.io.encode_png(tf.constant(image.astype(np.uint8))).numpy()
                (root / split / f'c{k}' / f'{i}.png').write_bytes(png)
    return str(root)


@pytest.fixture(scope='module')
def run(folder, tmp_path_factory):
    """One finished 2-epoch run (shared by the tests that read its files)."""
    model_dir = str(tmp_path_factory.mktemp('run') / 'run')
    summary = train.train(genotypes.DARTS_V2, TINY, model_dir, folder, verbose=0, log=lambda *_: None)
    return model_dir, summary


def _cli(run_tool, *args, timeout=300, env=None):
    return run_tool('train', *args, env={'TF_CPP_MIN_LOG_LEVEL': '2', **(env or {})}, timeout=timeout)


def _tiny_flags(folder, model_dir, epochs=2):
    return ['--genotype=DARTS_V2', f'--dataset={folder}', f'--model_dir={model_dir}', '--channels=4',
            '--layers=3', f'--epochs={epochs}', '--batch_size=16', '--learning_rate=0.05', '--noauxiliary',
            '--cutout=4', '--verbose=0']


# ---- the recipe pieces ----

def test_cosine_schedule_values():
    lr = lambda step: float(train.learning_rate(step, 0.025, 100, 'cosine'))
    assert lr(0) == pytest.approx(0.025)
    assert lr(50) == pytest.approx(0.0125)
    assert lr(25) == pytest.approx(0.0125 * (1 + math.cos(math.pi / 4)))
    assert lr(100) == pytest.approx(0.0, abs=1e-9)
    assert lr(150) == pytest.approx(0.0, abs=1e-9)  # past the end: stays at 0


def test_warmup_then_linear_decay():
    # 5 warm-up epochs of 10 steps, 25 epochs in all: the ImageNet recipe's shape.
    lr = lambda step: float(train.learning_rate(step, 0.5, 250, 'linear', warmup_steps=50))
    assert lr(0) == pytest.approx(0.5 / 50)
    assert lr(24) == pytest.approx(0.5 * 25 / 50)
    assert lr(49) == pytest.approx(0.5)
    assert lr(50) == pytest.approx(0.5)
    assert lr(150) == pytest.approx(0.25)
    assert lr(250) == pytest.approx(0.0, abs=1e-9)
    steps = [lr(s) for s in range(50, 251)]
    assert all(a >= b for a, b in zip(steps, steps[1:]))


def test_optimizer_follows_the_schedule():
    recipe = train.Recipe(epochs=10, learning_rate=0.5, lr_schedule='linear', warmup_epochs=2)
    optimizer = train.make_optimizer(recipe, steps_per_epoch=4)
    optimizer.iterations.assign(8)  # the first step after warm-up
    assert float(optimizer.learning_rate) == pytest.approx(0.5)
    optimizer.iterations.assign(24)
    assert float(optimizer.learning_rate) == pytest.approx(0.5 * 16 / 32)


def test_drop_path_ramps_linearly():
    rates = [train.drop_path_rate(e, 0.2, 600) for e in (0, 150, 300, 599)]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.2 * 599 / 600])


def test_label_smoothing_against_a_hand_computation():
    logits = np.array([[2.0, 0.0, -1.0]], np.float32)
    log_softmax = logits[0] - np.log(np.exp(logits[0]).sum())
    targets = np.array([1 - 0.1 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    expected = -(targets * log_softmax).sum()
    got = train.classification_loss(np.array([0]), logits, label_smoothing=0.1)
    assert float(got[0]) == pytest.approx(expected, rel=1e-6)
    plain = float(train.classification_loss(np.array([0]), logits)[0])
    assert plain == pytest.approx(-log_softmax[0], rel=1e-6) and plain < expected


def test_auxiliary_loss_is_weighted():
    labels = np.array([1, 2])
    logits = np.array([[0.5, 1.0, -0.5], [0.0, 0.0, 3.0]], np.float32)
    aux = np.array([[2.0, -1.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
    main = train.classification_loss(labels, logits).numpy()
    side = train.classification_loss(labels, aux).numpy()
    got = train.classification_loss(labels, logits, aux, auxiliary_weight=0.4).numpy()
    np.testing.assert_allclose(got, main + 0.4 * side, rtol=1e-6)
    np.testing.assert_allclose(side[1], math.log(3), rtol=1e-6)


def test_cutout_applied_to_training_batches(folder):
    dataset = data.load(folder, 'train')
    plain, cut = (next(iter(train.training_batches(dataset, r, epoch=0)))[0].numpy()
                  for r in (train.Recipe(batch_size=16, cutout=0), train.Recipe(batch_size=16, cutout=4)))
    zeros = (cut == 0).all(axis=-1).sum(axis=(1, 2))
    assert ((plain == 0).all(axis=-1).sum() == 0) and (zeros >= 4).all() and (zeros <= 16).all()
    # Same seed, same crops: only the cut-out pixels differ.
    np.testing.assert_array_equal(cut[cut != 0], plain[cut != 0])


def test_auxiliary_head_too_small_is_one_line(folder, tmp_path):
    recipe = train.Recipe(channels=4, layers=3, epochs=1, batch_size=16, auxiliary=True)
    with pytest.raises(train.TrainError, match='auxiliary head needs'):
        train.train(genotypes.DARTS_V2, recipe, str(tmp_path / 'r'), folder, verbose=0)
    assert not os.path.exists(tmp_path / 'r')  # nothing written


# ---- a run ----

def test_run_writes_summary_checkpoints_and_models(run):
    import keras
    model_dir, summary = run
    assert summary['epochs'] == 2 and 0 <= summary['test_top1'] <= summary['test_top5'] <= 100
    assert summary['params'] > 0 and summary['macs'] > 0 and summary['genotype_id']
    assert summary['learning_rate_for_global_batch'] == 0.05 and summary['replicas'] == 1
    with open(os.path.join(model_dir, 'summary.json')) as f:
        assert json.load(f) == summary
    assert tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints')).endswith('ckpt-8')  # 2 x 4 steps
    assert os.listdir(os.path.join(model_dir, 'logs'))
    final = keras.models.load_model(os.path.join(model_dir, 'final.keras'))
    # No validation split: no best.keras (choosing on the test split is not an option).
    assert not os.path.exists(os.path.join(model_dir, 'best.keras'))
    assert summary['best_epoch'] is None and summary['validation_top1'] is None
    assert summary['split_of']['test_top1'].startswith('test') and 'chooses nothing' in summary['selection']
    assert [h['epoch'] for h in json.loads(open(os.path.join(model_dir, 'history.json')).read())] == [1, 2]
    assert final.count_eval_params() == summary['params']
    # The last epoch (index 1 of 2) trained at drop-path 0.2 * 1 / 2.
    assert float(final.cells_[0].drop_path_rate.numpy()) == pytest.approx(0.1)


def test_finished_run_is_returned_and_other_config_refused(run, folder):
    model_dir, summary = run
    assert train.train(genotypes.DARTS_V2, TINY, model_dir, folder, verbose=0, log=lambda *_: None) == summary
    other = train.Recipe(**{**TINY.__dict__, 'channels': 8})
    with pytest.raises(train.TrainError, match=r'other settings \(recipe.channels: 4 -> 8\)'):
        train.train(genotypes.DARTS_V2, other, model_dir, folder, verbose=0)
    with pytest.raises(train.TrainError, match=r'other settings \(genotype: '):
        train.train(genotypes.DARTS_V1, TINY, model_dir, folder, verbose=0)
    assert os.path.isfile(os.path.join(model_dir, 'final.keras'))  # nothing lost


@pytest.mark.slow
def test_tflite_accuracy_agrees_with_keras(run, folder):
    import keras
    from ladnas_tf.graph import convert
    model_dir, summary = run
    model = keras.models.load_model(os.path.join(model_dir, 'final.keras'))
    test_set = data.load(folder, 'test')
    images, labels = (np.concatenate(t) for t in zip(*[(x.numpy(), y.numpy()) for x, y in
                                                        data.batches(test_set, 16, training=False)]))
    keras_top1 = 100 * np.mean(model.predict(images, verbose=0).argmax(-1) == labels)
    tflite = convert.keras_to_tflite(model, SIZE)
    assert train.tflite_accuracy(tflite, test_set) == pytest.approx(keras_top1)
    assert keras_top1 == pytest.approx(summary['test_top1'])
    assert train.tflite_accuracy(tflite, test_set, limit=5) == pytest.approx(
        100 * np.mean(model.predict(images[:5], verbose=0).argmax(-1) == labels[:5]))
    wrong = data.load(folder, 'test', image_size=8)
    with pytest.raises(train.TrainError, match='TFLite model takes 16x16x3'):
        train.tflite_accuracy(tflite, wrong)
    with pytest.raises(train.TrainError, match='representative images are 8x8'):
        train.representative_images(wrong, 4, SIZE)


# ---- the CLI: one-line errors, resume after a kill ----

@pytest.mark.slow
def test_cli_invalid_genotype_is_one_line(run_tool, tmp_path):
    bad = ('{"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 9], '
           '["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]], '
           '"reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1], '
           '["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]]}')
    result = _cli(run_tool, f'--genotype={bad}', f'--model_dir={tmp_path / "r"}')
    assert result.returncode == 1
    assert result.stderr.startswith('error: ') and len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / 'r')


@pytest.mark.slow
def test_cli_refuses_an_existing_run_dir(run_tool, tmp_path, folder):
    model_dir = tmp_path / 'r'
    model_dir.mkdir()
    (model_dir / 'notes.txt').write_text('keep me')
    result = _cli(run_tool, *_tiny_flags(folder, model_dir))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and '--overwrite' in lines[0]
    assert (model_dir / 'notes.txt').read_text() == 'keep me'


@pytest.mark.slow
def test_cli_bad_validation_fraction_is_one_line(run_tool, tmp_path, folder):
    model_dir = tmp_path / 'r'
    model_dir.mkdir()
    (model_dir / 'notes.txt').write_text('keep me')
    for bad in ('1', '-0.1', '1.5'):
        result = _cli(run_tool, *_tiny_flags(folder, model_dir), f'--validation_fraction={bad}', '--overwrite')
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and 'validation_fraction must lie in [0, 1)' in lines[0]
    assert os.listdir(model_dir) == ['notes.txt']  # nothing overwritten, even with --overwrite


def _final_weights(model_dir):
    import keras
    return keras.models.load_model(os.path.join(model_dir, 'final.keras')).get_weights()


@pytest.mark.slow
def test_killed_and_resumed_ends_as_an_uninterrupted_run(run_tool, tmp_path, folder):
    """tools.train killed (SIGKILL from inside, at a chosen step: no race with a timer) at step 6 of 8,
    then the same command: once resuming at the epoch boundary (step 4), once mid-epoch (a checkpoint
    after every step). Both end with the weights, drop-path draws and figures of a run never killed."""
    common = ['--validation_fraction=0.25', '--drop_path_prob=0.3', '--epochs=2']
    straight = tmp_path / 'straight'
    assert _cli(run_tool, *_tiny_flags(folder, straight), *common).returncode == 0
    expected = _final_weights(str(straight))
    history = json.loads((straight / 'history.json').read_text())
    for name, every, resumed_at in (('boundary', '0', 'after epoch 1, step 0'),
                                    ('mid_epoch', '1e-9', 'after epoch 1, step 2')):
        model_dir = tmp_path / name
        args = [*_tiny_flags(folder, model_dir), *common, f'--checkpoint_every={every}']
        killed = _cli(run_tool, *args, env={run_dir.KILL_AT_STEP_ENV: '6'})
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert not (model_dir / 'summary.json').exists()
        resumed = _cli(run_tool, *args)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert resumed_at in resumed.stderr
        for a, b in zip(_final_weights(str(model_dir)), expected):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=name)
        resumed_history = json.loads((model_dir / 'history.json').read_text())
        assert len(resumed_history) == len(history) == 2
        for got, want in zip(resumed_history, history):
            assert got == pytest.approx(want, abs=1e-5)


# ---- honest model selection ----

@pytest.mark.slow
def test_the_test_split_chooses_nothing(folder, tmp_path, monkeypatch):
    """Two runs whose test figures are scripted to disagree (best at epoch 1 in one, at epoch 3 in the
    other) write the same best.keras, best epoch and final.keras: no code path reads the test split to
    choose or keep a model. The test split is evaluated exactly once per epoch, and only reported."""
    import keras
    tf.config.experimental.enable_op_determinism()
    recipe = train.Recipe(**{**TINY.__dict__, 'epochs': 3, 'validation_fraction': 0.25})
    real = train.Trainer.evaluate
    outcomes = {}
    for name, test_figures in (('rising', [10.0, 50.0, 90.0]), ('falling', [90.0, 50.0, 10.0])):
        calls = []

        def evaluate(self, dataset, batch_size, figures=iter(test_figures), calls=calls):
            calls.append(dataset.split)
            if dataset.split == 'test':
                top1 = next(figures)
                return top1, top1
            return real(self, dataset, batch_size)
        monkeypatch.setattr(train.Trainer, 'evaluate', evaluate)
        model_dir = str(tmp_path / name)
        summary = train.train(genotypes.DARTS_V2, recipe, model_dir, folder, verbose=0, log=lambda *_: None)
        assert calls == ['train.validation', 'test'] * 3
        assert summary['test_top1'] == test_figures[-1]  # reported as measured
        history = json.loads(open(os.path.join(model_dir, 'history.json')).read())
        validation = [h['validation_top1'] for h in history]
        assert summary['best_epoch'] == 1 + int(np.argmax(validation))
        assert summary['best_validation_top1'] == pytest.approx(max(validation))
        assert summary['examples'] == {'train': 48, 'validation': 16, 'test': 32}
        outcomes[name] = (summary['best_epoch'],
                          keras.models.load_model(os.path.join(model_dir, 'best.keras')).get_weights(),
                          _final_weights(model_dir))
    (epoch_a, best_a, final_a), (epoch_b, best_b, final_b) = outcomes.values()
    assert epoch_a == epoch_b
    # The same weights up to float rounding: a model chosen by the test figures would be another
    # epoch's, orders of magnitude apart (thread scheduling in a busy process moves the last bits).
    for a, b in zip(best_a + final_a, best_b + final_b):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_the_validation_split_is_held_out_of_train(folder):
    full = data.load(folder, 'train')
    part, validation = data.validation_split(full, 0.25, seed=0)
    paths = lambda d: set(next(d.records.batch(d.num_examples).as_numpy_iterator())[0].tolist())
    assert (part.num_examples, validation.num_examples) == (48, 16)
    assert not paths(part) & paths(validation) and paths(part) | paths(validation) == paths(full)
    with pytest.raises(train.TrainError, match=r'validation_fraction must lie in \[0, 1\)'):
        train.Recipe(validation_fraction=1.0).check()


# ---- two replicas ----

_REPLICAS = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ladnas_tf import genotypes, train
    recipe = train.Recipe(channels=4, layers=3, epochs=2, batch_size=8, auxiliary=False, drop_path_prob=0,
                          cutout=0, label_smoothing=0.1, learning_rate=0.1)
    mirrored = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    two = train.Trainer(genotypes.DARTS_V2, recipe, 10, 16, 10, mirrored)
    one = train.Trainer(genotypes.DARTS_V2, recipe, 10, 16, 10)
    one.model.set_weights(two.model.get_weights())
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 16, 16, 3)).astype(np.float32)
    labels = rng.integers(0, 10, 8).astype(np.int32)
    batches = mirrored.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((images, labels)).batch(8))
    trainable = lambda t: [v.numpy() for v in t.model.trainable_variables]
    initial = trainable(two)
    loss2, _ = two.train_step(*next(iter(batches)))

    # One replica, the same global batch in the two shares each replica saw (BN statistics are
    # per replica, as in DARTS's multi-GPU training): losses and gradients summed, one update.
    @tf.function
    def reference():
        total, grads = 0.0, None
        for part in (slice(0, 4), slice(4, 8)):
            loss, _, g = train.gradients(one.model, images[part], labels[part], recipe, 8)
            total += loss
            grads = g if grads is None else [a + b for a, b in zip(grads, g)]
        train.apply_update(one.model, one.optimizer, grads, recipe)
        return total
    loss1 = reference()
    # Trainable weights: BN's moving statistics see two half batches one after the other here.
    diff = max(float(np.abs(a - b).max()) for a, b in zip(trainable(one), trainable(two)))
    moved = max(float(np.abs(a - b).max()) for a, b in zip(trainable(one), initial))
    # And a whole run under the strategy: distributed batches, drop-path, evaluation, files.
    run = train.train(genotypes.DARTS_V2, train.Recipe(channels=4, layers=3, epochs=1, batch_size=16,
                                                       auxiliary=False, cutout=4),
                      sys.argv[2], sys.argv[1], strategy=mirrored, verbose=0, log=lambda *_: None)
    print(json.dumps({'replicas': mirrored.num_replicas_in_sync, 'loss2': float(loss2),
                      'loss1': float(loss1), 'weight_diff': diff, 'moved': moved,
                      'run_replicas': run['replicas'], 'run_per_replica_batch': run['per_replica_batch_size']}))
''')


@pytest.mark.slow
def test_two_replicas_match_one_on_the_same_global_batch(folder, tmp_path, run_tool):
    result = run_tool('-c', _REPLICAS, folder, str(tmp_path / 'r'), env={'TF_CPP_MIN_LOG_LEVEL': '2'}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out['replicas'] == 2
    assert out['loss2'] == pytest.approx(out['loss1'], rel=1e-5)
    assert out['moved'] > 1e-4 and out['weight_diff'] < 1e-5
    assert (out['run_replicas'], out['run_per_replica_batch']) == (2, 8)
    assert (tmp_path / 'r' / 'final.keras').is_file()


def test_the_checkpoint_holds_every_weight(tmp_path):
    """tf.train.Checkpoint(model=...) alone misses the weights of Keras 3 layers kept in lists."""
    recipe = train.Recipe(channels=4, layers=3, epochs=1, batch_size=8, auxiliary=False, cutout=0,
                          drop_path_prob=0.0)
    trainer = train.Trainer(genotypes.DARTS_V2, recipe, num_classes=3, image_size=8, steps_per_epoch=2)
    path = trainer.checkpoint.save(str(tmp_path / 'ckpt'))
    saved = [n for n in tf.train.load_checkpoint(path).get_variable_to_shape_map()
             if n.startswith('model_variables/')]
    # Every weight and the drop-path seed generators' states (a resumed run drops the same paths).
    assert len(saved) == len(trainer.model.variables) > len(trainer.model.weights) > 50

