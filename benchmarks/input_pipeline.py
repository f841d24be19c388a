"""Is ImageNet training on this CPU bound by the input or by the model? Images per second of the
ImageNet training view (data.py + augment.py: JPEG decode of the crop window, random-resized crop to
224, flip, colour jitter, normalisation, batching) against images per second of the training step of
the ImageNet network (DARTS_V2, C=48, 14 cells, auxiliary head, the paper's recipe), both on one core.

    python -m benchmarks.input_pipeline --core=1 --out=docs/benchmarks/input_pipeline.json

The JPEGs are made here (ImageNet's commonest size, 500x375, ~110 KB each like ILSVRC2012's: a smooth
picture with fine noise, quality 90), written once to a temporary ImageNet folder and read through the
page cache, so the figure is decoding and augmentation, not the disk. The process is pinned to one
core and TensorFlow to one intra-op and one inter-op thread; the two measurements run one after the
other. Tracing, the first batches and the first steps are excluded. Wall-clock and CPU-time rates are
both kept: on a shared machine the CPU-time ones are the load-proof figures.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_jpegs(root, count, height, width, seed=0):
    """count JPEGs in root/train/<2 classes>/ and root/val/; returns their mean size in bytes."""
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    sizes = []
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    for split, n in (('train', count), ('val', 2)):
        for i in range(n):
            folder = os.path.join(root, split, f'class{i % 2}')
            os.makedirs(folder, exist_ok=True)
            waves = [np.sin(2 * np.pi * (rng.uniform(1, 4) * x + rng.uniform(1, 4) * y + rng.uniform()))
                     for _ in range(3)]
            pixels = 127 + 80 * np.stack(waves, -1) + rng.normal(0, 24, (height, width, 3))
            encoded = tf.io.encode_jpeg(np.clip(pixels, 0, 255).astype(np.uint8), quality=90).numpy()
            with open(os.path.join(folder, f'{i:05d}.JPEG'), 'wb') as f:
                f.write(encoded)
            sizes.append(len(encoded))
    return float(np.mean(sizes))


def input_images_per_s(root, batch, batches, warmup=3):
    from ladnas_tf import data
    train = data.load('imagenet_folder', 'train', root)
    iterator = iter(data.batches(train, batch, training=True, seed=0, augment='imagenet', repeat=True))
    for _ in range(warmup):
        next(iterator)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        images, _ = next(iterator)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert images.shape == (batch, 224, 224, 3)
    return {'images_per_s': batch * batches / wall, 'images_per_cpu_s': batch * batches / cpu,
            'cpu_seconds_per_image': cpu / (batch * batches), 'batch': batch, 'batches': batches}


def train_images_per_s(batch, steps, warmup=2):
    import numpy as np
    from ladnas_tf import genotypes, train
    recipe = train.IMAGENET_RECIPE
    recipe = train.Recipe(**{**recipe.__dict__, 'batch_size': batch})
    trainer = train.Trainer(genotypes.DARTS_V2, recipe, num_classes=1000, image_size=224, steps_per_epoch=1000)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 224, 224, 3)).astype(np.float32)
    labels = rng.integers(0, 1000, batch).astype(np.int32)
    start = time.perf_counter()
    for _ in range(warmup):  # the first traces the step
        trainer.train_step(images, labels)
    first = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss, _ = trainer.train_step(images, labels)
    float(loss)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {'images_per_s': batch * steps / wall, 'images_per_cpu_s': batch * steps / cpu,
            'seconds_per_step': wall / steps,
            'cpu_seconds_per_image': cpu / (batch * steps), 'batch': batch, 'steps': steps,
            'trace_and_warmup_seconds': first, 'params': trainer.model.count_eval_params(),
            'macs': trainer.model.count_macs()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--core', type=int, default=0, help='the CPU core to pin to')
    parser.add_argument('--jpegs', type=int, default=256, help='training JPEGs made')
    parser.add_argument('--height', type=int, default=375)
    parser.add_argument('--width', type=int, default=500)
    parser.add_argument('--batch', type=int, default=32, help='input pipeline batch')
    parser.add_argument('--batches', type=int, default=16, help='timed input batches')
    parser.add_argument('--train_batch', type=int, default=16, help='training step batch')
    parser.add_argument('--train_steps', type=int, default=3, help='timed training steps')
    parser.add_argument('--out', default=None, help='JSON output (default: stdout only)')
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    sys.path.insert(0, REPO)
    from ladnas_tf.profiling.agent import cpu_model
    with tempfile.TemporaryDirectory() as root:
        mean_bytes = make_jpegs(root, args.jpegs, args.height, args.width)
        pipeline = input_images_per_s(root, args.batch, args.batches)
    step = train_images_per_s(args.train_batch, args.train_steps)
    result = {
        'input_pipeline': {**pipeline, 'view': 'ImageNet training: random-resized crop 224, flip, colour jitter',
                           'jpeg': f'{args.width}x{args.height}', 'jpeg_mean_bytes': round(mean_bytes)},
        'train_step': {**step, 'network': 'NetworkImageNet DARTS_V2, C=48, 14 cells, auxiliary head',
                       'recipe': 'configs/train_imagenet.cfg (batch changed)'},
        'input_over_train': pipeline['images_per_s'] / step['images_per_s'],
        # CPU time is the steadier figure on a shared machine (the wall clock counts other tenants' time)
        'input_over_train_cpu': pipeline['images_per_cpu_s'] / step['images_per_cpu_s'],
        'core': args.core, 'threads': 1, 'device': cpu_model(), 'python': platform.python_version(),
        'tensorflow': tf.__version__, 'date': time.strftime('%Y-%m-%d')}
    print(json.dumps(result, indent=2))
    if args.out:
        from benchmarks import write_json
        write_json(args.out, result)


if __name__ == '__main__':
    main()
