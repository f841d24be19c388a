"""What LAT(alpha) adds to a search step (the paper calls it negligible; issue 6 asks for <= 1%).

Two identical supernets and Architects, one with the plain architecture loss and one with
lambda_ * LAT(alpha) from the shipped LPM (M samples), step in alternation on the same batches, so
that load on the machine falls on both alike. Reported: median wall and CPU time per full step
(architecture + weight step) of each, the ratio, and the cost of LAT(alpha) alone (its forward and
gradient, inside a tf.function).

    python -m benchmarks.latency_term_cost            (--channels 8 --layers 5 --batch 32 --size 16 --steps 20)
        [--json=docs/benchmarks/latency_term_cost.json]
"""
import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--channels', type=int, default=8)
    parser.add_argument('--layers', type=int, default=5)
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--size', type=int, default=16)
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--samples', type=int, default=20)
    parser.add_argument('--lpm', default='cpu_tflite_cifar', help='A predictor name or an LPM directory.')
    parser.add_argument('--json', help='Also write the figures to this JSON file.')
    args = parser.parse_args(argv)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import tensorflow as tf
    sys.path.insert(0, REPO)
    from ladnas_tf import architect, supernet
    from ladnas_tf.cost import latency as cost
    from ladnas_tf.lpm import registry

    predictor = registry.load(args.lpm)
    term = cost.LatencyTerm(predictor, lambda_=0.1, m=args.samples, cells=predictor.cells)
    searchers = {}
    for name, terms in (('plain', {}), ('latency', {'latency': term})):
        model = supernet.build_supernet(args.channels, args.layers, 10, args.size, seed=0)
        searchers[name] = architect.Architect(model, architect.ArchitectConfig(), args.steps + 1, 1,
                                              architect.ArchLoss(terms))
    rng = np.random.default_rng(0)

    def batch():
        return (tf.constant(rng.normal(size=(args.batch, args.size, args.size, 3)), tf.float32),
                tf.constant(rng.integers(0, 10, args.batch), tf.int32))

    times = {name: [] for name in searchers}
    for step in range(args.steps + 1):  # step 0 traces: not counted
        weight_batch, arch_batch = batch(), batch()
        for name, searcher in searchers.items():
            wall, cpu = time.perf_counter(), time.process_time()
            searcher.step(weight_batch, arch_batch)
            if step:
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))

    model = searchers['latency'].model
    alphas = [model.alpha_normal, model.alpha_reduce]

    @tf.function
    def lat_alone():
        with tf.GradientTape() as tape:
            value = term(searchers['latency'].model)
        grads = tape.gradient(value, alphas)  # alpha_reduce: None with a normal-cell LPM
        return [g for g in grads if g is not None]
    lat_alone()
    alone = []
    for _ in range(args.steps):
        wall = time.perf_counter()
        [g.numpy() for g in lat_alone()]
        alone.append(time.perf_counter() - wall)

    plain, latency = (np.median(np.array(times[n]), axis=0) for n in ('plain', 'latency'))
    print(f'config: C={args.channels} layers={args.layers} batch={args.batch} {args.size}x{args.size}, '
          f'first order, M={args.samples}, {args.steps} timed steps each, alternating')
    print(f'{"":10s}{"step wall s":>14s}{"step cpu s":>14s}')
    print(f'{"plain":10s}{plain[0]:14.4f}{plain[1]:14.4f}')
    print(f'{"latency":10s}{latency[0]:14.4f}{latency[1]:14.4f}')
    print(f'{"ratio":10s}{latency[0] / plain[0]:14.4f}{latency[1] / plain[1]:14.4f}')
    print(f'LAT(alpha) with its gradient alone: {1e3 * np.median(alone):.2f} ms '
          f'= {100 * np.median(alone) / plain[0]:.2f}% of a plain step')
    if args.json:
        from benchmarks import save_json
        step = lambda t: {'step_wall_s': float(t[0]), 'step_cpu_s': float(t[1])}
        save_json(args.json, {
            'plain': step(plain), 'latency': step(latency), 'ratio_wall': float(latency[0] / plain[0]),
            'ratio_cpu': float(latency[1] / plain[1]), 'lat_alpha_alone_ms': float(1e3 * np.median(alone)),
            'lat_alpha_share_of_plain_step_pct': float(100 * np.median(alone) / plain[0]),
            'order': 'first'}, {k: v for k, v in vars(args).items() if k != 'json'})


if __name__ == '__main__':
    main()
