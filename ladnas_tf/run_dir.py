"""What every run directory shares (search, training, the LPM's training, the pipeline).

A run directory records the settings it was started with in a JSON file. Preparing it again with the
same settings resumes it; other settings, or a non-empty directory without that file (files of
something else), are refused with the differing settings named, unless overwrite, which removes only
the outputs the run itself writes: a directory given to --overwrite may hold other runs and the user's
files, and they stay. Files are written atomically (atomic_path), so that a kill leaves the old file or the
new one, never half of either; a run written whole at its end is staged beside its directory and swapped in
output by output (staged_outputs). Checkpoints hold variables by name
(their Keras path), not by their position in a list, and are restored by the checkpoint's name.
"""
import contextlib
import json
import os
import shutil
import signal
import uuid

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from ladnas_tf.bad_input import BadInput

CHECKPOINTS = 'checkpoints'
ANY = object()  # in `added`: a setting an older directory may lack, whatever its value now


class RunDirError(BadInput):
    """A run directory that cannot be used as asked; the message is one line naming the problem."""


@contextlib.contextmanager
def atomic_path(path):
    """A temporary name beside `path` to write a file or a directory under, moved onto `path` when the block
    ends without error (an old directory there is replaced whole: for a folder that may hold what others
    wrote, use staged_outputs) and removed otherwise: a kill leaves the old content or the new one, never
    half of either. The name keeps the extension (Keras saves by it)."""
    with atomic_paths([path]) as temps:
        yield temps[path]


@contextlib.contextmanager
def atomic_paths(paths):
    """atomic_path for several outputs of one step: {path: temporary name}, every one moved into place only
    when the block ends without error, so a failure anywhere (a refusal raised inside the block included)
    leaves all the old files."""
    temps = {path: _temporary_name(path) for path in paths}
    for temp in temps.values():
        _remove(temp)  # a killed write's leftover
    try:
        yield temps
        for path, temp in temps.items():
            if os.path.isdir(temp) and os.path.isdir(path):
                shutil.rmtree(path)
            os.replace(temp, path)
    finally:
        for temp in temps.values():
            _remove(temp)


def _temporary_name(path):
    root, ext = os.path.splitext(path.rstrip(os.sep))
    return f'{root}.partial{ext}'


@contextlib.contextmanager
def staged_outputs(path, outputs, last=None):
    """A fresh folder beside `path` to write a run's outputs in; when the block ends without error each
    entry written replaces its namesake in `path`, and `outputs` (the names the run writes) it did not write
    this time are removed; nothing else in `path` is touched. On error the folder is removed and `path` is
    as it was. `last` (the file that makes a folder a run, e.g. an LPM's metadata.json) is removed first and
    moved in last, so a kill during the swap leaves an incomplete run, never a mixture read as one."""
    staging = f'{path.rstrip(os.sep)}.{uuid.uuid4().hex[:8]}.partial'  # never a name someone else uses
    os.makedirs(staging)
    try:
        yield staging
        _swap_in(staging, path, outputs, last)
    finally:
        _remove(staging)


def _swap_in(staging, path, outputs, last):
    if not os.path.isdir(path):  # nothing there yet: the whole folder in one step
        os.replace(staging, path)
        return
    names = sorted((set(outputs) | set(os.listdir(staging))) - {last})
    if last:
        _remove(os.path.join(path, last))
    for name in names + ([last] if last else []):
        source, target = os.path.join(staging, name), os.path.join(path, name)
        if os.path.isdir(source) or os.path.isdir(target) or not os.path.lexists(source):
            _remove(target)  # os.replace swaps a file for a file only
        if os.path.lexists(source):
            os.replace(source, target)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def write_bytes(path, payload):
    with atomic_path(path) as temp, open(temp, 'wb') as f:
        f.write(payload)


def write_text(path, text):
    with atomic_path(path) as temp, open(temp, 'w') as f:
        f.write(text)


def write_json(path, payload, sort_keys=False):
    write_text(path, json.dumps(payload, indent=2, sort_keys=sort_keys) + '\n')


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_json_or_none(path):
    """The JSON at path, or None when it is missing or unreadable (a file of an older or killed run)."""
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError):
        return None


# ---- settings ----

def flatten(settings, prefix=''):
    """{'recipe': {'epochs': 1}} -> {'recipe.epochs': 1}: nested settings compared key by key."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def differing_settings(saved, settings, ignore=(), added=None):
    """The (dotted) keys whose values differ between saved settings and these.

    ignore: keys that never decide whether a run may resume. added: keys introduced after a directory
    may have been written -> the value such a directory implies (ANY: whatever the value now)."""
    saved, settings, added = flatten(saved), flatten(settings), added or {}
    differ = []
    for key in sorted(set(saved) | set(settings)):
        if key in ignore or (key not in saved and added.get(key) is ANY):
            continue
        if saved.get(key, added.get(key)) != settings.get(key):
            differ.append(key)
    return differ


def describe_differences(saved, settings, keys, limit=4):
    """'channels: 4 -> 6, ...' for the first `limit` differing keys."""
    saved, settings = flatten(saved), flatten(settings)
    return ', '.join(f'{k}: {saved.get(k)!r} -> {settings.get(k)!r}' for k in keys[:limit])


# ---- preparing ----

def remove_outputs(run_dir, outputs):
    """Removes the named outputs of a run (files or directories), nothing else."""
    for name in outputs:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


def prepare(run_dir, settings, settings_file, outputs, overwrite=False, ignore=(), added=None, what='run',
            error=RunDirError):
    """True when run_dir holds a run of these settings to resume; False for a fresh one (whose settings
    are written to settings_file). outputs: the names the run writes (settings_file among them), which
    overwrite removes; error: the BadInput class to raise."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise error(f'{run_dir} exists and is not a directory')
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        if overwrite:
            remove_outputs(run_dir, outputs)
        else:
            path = os.path.join(run_dir, settings_file)
            if not os.path.isfile(path):
                raise error(f'{run_dir} is not empty and holds no {settings_file} of a {what} '
                            '(pass --overwrite to replace it, or another --model_dir)')
            saved = read_json(path)
            differ = differing_settings(saved, settings, ignore, added)
            if differ:
                raise error(f'{run_dir} holds a {what} of other settings '
                            f'({describe_differences(saved, settings, differ)}); '
                            'pass --overwrite or another --model_dir')
            return True
    os.makedirs(run_dir, exist_ok=True)
    write_json(os.path.join(run_dir, settings_file), settings)
    return False


# ---- checkpoints ----

def named_variables(model, variables=None):
    """{path inside the model: variable} of model.weights (or the given variables of it). Keras 3 layers
    held in lists (cells) are not reached by tf.train.Checkpoint, so their variables are checkpointed
    explicitly, keyed by name; the model's own name is left out, as Keras numbers it per process. Variables
    outside the model's scope (the drop-path seed generators, also numbered per process) are keyed by their
    position in the list instead, which the model's fixed build order keeps stable."""
    named = {}
    prefix = model.name + '/'
    for position, variable in enumerate(model.weights if variables is None else variables):
        path = variable.path
        name = path[len(prefix):] if path.startswith(prefix) else f'{position}:{path.rsplit("/", 1)[-1]}'
        if name in named:
            raise ValueError(f'two variables share the name {name!r}: they cannot be checkpointed by name')
        named[name] = variable
    return named


def checkpoint_manager(checkpoint, run_dir, max_to_keep=2):
    """A tf.train.CheckpointManager over run_dir/checkpoints."""
    return tf.train.CheckpointManager(checkpoint, os.path.join(run_dir, CHECKPOINTS), max_to_keep=max_to_keep)


def restore(checkpoint, manager, name=None, error=RunDirError, fallback=None):
    """Restores the checkpoint called `name` (a path such as .../ckpt-120; None: the latest) into
    checkpoint; returns its path, or None when there is none. fallback: a checkpoint object of an older
    layout of the same state, tried when the first does not match. A checkpoint of other variables
    raises error naming it."""
    path = name or manager.latest_checkpoint
    if path is None:
        return None
    problem = None
    for candidate in (checkpoint, fallback):
        if candidate is None:
            continue
        try:
            candidate.restore(path).assert_existing_objects_matched()
            return path
        except (ValueError, AssertionError, tf.errors.OpError) as e:
            problem = problem or (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise error(f'checkpoint {path} is from another configuration ({problem[:160]})')


# ---- TensorBoard ----
# tf.summary.scalar/image/text need the tensorboard package, which only viewing the logs needs: the
# same records are written with tf.summary.write and the plugins' metadata.

def summary_writer(run_dir, name):
    return tf.summary.create_file_writer(os.path.join(run_dir, name))


def write_record(tag, tensor, step, plugin):
    """One summary record for TensorBoard's plugin ('scalars', 'images', 'text'), in the default writer."""
    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = plugin
    tf.summary.write(tag, tensor, step=step, metadata=meta)


def write_scalars(writer, step, values):
    """{tag: number} as TensorBoard scalars at step."""
    with writer.as_default():
        for tag, value in values.items():
            write_record(tag, tf.constant(float(value), tf.float32), step, 'scalars')


def write_image(tag, image, step):
    """image: [1, H, W, 3] uint8, as tf.summary.image stores it (width, height, PNG), in the default writer."""
    _, h, w, _ = image.shape
    write_record(tag, tf.stack([tf.as_string(w), tf.as_string(h), tf.image.encode_png(image[0])]), step, 'images')


# ---- a kill at an exact step, for proving resume ----

KILL_AT_STEP_ENV = 'LADNAS_TF_KILL_AT_STEP'


def kill_at_step(step):
    """A step_callback that SIGKILLs this very process when the global step reaches `step`: a kill at a
    chosen point, for proving that a resumed run ends as an uninterrupted one without racing a timer."""
    def callback(global_step):
        if global_step >= step:
            os.kill(os.getpid(), signal.SIGKILL)
    return callback


def step_callback_from_env(environ=os.environ):
    """kill_at_step(N) when the environment sets LADNAS_TF_KILL_AT_STEP=N, else None (the tools pass it on)."""
    value = environ.get(KILL_AT_STEP_ENV)
    return kill_at_step(int(value)) if value else None
