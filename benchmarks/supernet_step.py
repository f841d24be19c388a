"""First-step time, per-step time and peak memory of a search step: our supernet vs PyTorch.

The PyTorch side is DARTS's search network written out below (a MixedOp module per edge, the usual
eager implementation), with the same step: an architecture step (Adam on alpha, first order, on the
architecture batch), then a weight step (SGD momentum, weight decay, clipping 5). Each framework runs
in its own subprocess so that its peak RSS is its own.

    taskset -c 0 python -m benchmarks.supernet_step
    (options: --channels 8 --layers 5 --batch 32 --size 32 --steps 5 --threads 1 --method darts|pcdarts
     --order first|second --repeats 1 --frameworks tensorflow,tf-eigen,tf-recompute,torch
     --settings 8/5/32,16/8/64 --profile_steps 2 --note 'what else ran'
     --json=docs/benchmarks/supernet_step.json)

With --profile_steps N, each `tensorflow` run then traces N more steps with TensorFlow's profiler (after
the timed ones, which it does not disturb) and reports the time per step of each op type, grouped by
what it computes (OP_GROUPS), and a floor: the time of the kernels any implementation of this step runs
(depthwise convs, BN, pooling, ReLU, and the pointwise convs at their needed multiply-adds: a mixed op
runs its E edges' 1x1 convs as one block-diagonal matmul, E times the work of E separate ones). The
floor counts no elementwise op, no reshuffle and no overhead, so it is a lower bound of what these
kernels allow, as a multiple of PyTorch's step.

Wall-clock and CPU (process) time are both reported: on a shared machine the CPU time is the steadier
figure. With --repeats N the frameworks take turns N times (tf, torch, tf, torch, ...) and each figure
is the median of its N runs, so that a change in the machine's load falls on both sides; the load
average (os.getloadavg) before and after each run is recorded. The first step is split into building
the model (`build_*`: for TensorFlow the supernet and the Architect, for PyTorch the network and its
optimizers) and the rest (`first_*` includes both). Peak RSS is reported whole and above the process's
RSS right after importing the framework (TensorFlow + Keras take ~0.67 GB before any model, PyTorch
~0.22 GB). torch is a benchmark-only
dependency: `pip install torch==2.13.0`.
"""
import argparse
import glob
import json
import os
import statistics
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tf-recompute: our supernet with recompute=True (each mixed op's forward pass re-run for its gradient);
# tensorflow runs as the tools do (importing `tools` first: oneDNN's kernels, see tools/__init__.py);
# tf-eigen: the same with TF_ENABLE_ONEDNN_OPTS=0, TensorFlow's Eigen kernels (its own default on AVX2-only CPUs)
FRAMEWORKS = ('tensorflow', 'tf-eigen', 'tf-recompute', 'torch')
DEFAULT_FRAMEWORKS = ('tensorflow', 'tf-eigen', 'torch')
# Op types (oneDNN's _Mkl / _MklNative prefixes dropped) by what they compute; FLOOR_GROUPS are the
# kernels of the step's math itself, which PyTorch runs too.
OP_GROUPS = (('depthwise conv', ('DepthwiseConv2dNative',)), ('batch norm', ('FusedBatchNorm',)),
             ('pointwise conv', ('Einsum',)), ('pooling', ('MaxPool', 'AvgPool')), ('relu', ('Relu',)),
             ('dilation reshuffle', ('SpaceToBatchND', 'BatchToSpaceND')),
             ('elementwise and reductions', ('Mul', 'Sum', 'AddN', 'AddV2', 'Sub', 'Tile')))
FLOOR_GROUPS = ('depthwise conv', 'batch norm', 'pooling', 'relu')


def _clock():
    return time.perf_counter(), time.process_time()


def _since(start):
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def _peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def _rss_gb():
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmRSS')) / 1e6


def run_tensorflow(args):
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    sys.path.insert(0, REPO)
    import tools  # noqa: F401  (the tools' runtime settings, before TensorFlow loads)
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from ladnas_tf import architect, supernet
    args.import_rss = _rss_gb()  # the framework's own footprint, before any model

    start = _clock()
    pc = args.method == 'pcdarts'
    model = supernet.build_supernet(args.channels, args.layers, 10, args.size,
                                    partial_channels=4 if pc else 1, edge_normalization=pc, seed=0,
                                    recompute=args.framework == 'tf-recompute')
    searcher = architect.Architect(model, architect.ArchitectConfig(order=args.order), steps_per_epoch=100,
                                   epochs=50)
    x = tf.random.stateless_normal([args.batch, args.size, args.size, 3], [1, 2])
    y = tf.random.stateless_uniform([args.batch], [3, 4], 0, 10, tf.int32)
    args.build = _since(start)
    searcher.step((x, y), (x, y))
    first = _since(start)
    start = _clock()
    for _ in range(args.steps):
        searcher.step((x, y), (x, y))
    total = _since(start)
    params = sum(int(v.shape.num_elements()) for v in model.weight_parameters())
    if args.profile_steps:
        args.ops = _profiled_ops(lambda: searcher.step((x, y), (x, y)), args.profile_steps)
        args.pointwise_needed = _pointwise_needed(model, args.size)
    return first, total, params


def _profiled_ops(step, steps):
    """{op type: ms per step} over `steps` profiled steps (TensorFlow's profiler, compute threads)."""
    import tensorflow as tf
    # The only reader of the profiler's trace that ships with TensorFlow (TensorBoard's profile plugin
    # uses the same one).
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            step()
        tf.profiler.experimental.stop()
        xspace = sorted(glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True))[-1]
        data, _ = plugin.xspace_to_tools_data([xspace], 'trace_viewer@', {})
    events = json.loads(data)['traceEvents']
    threads = {(e['pid'], e['tid']) for e in events
               if e.get('ph') == 'M' and e.get('name') == 'thread_name' and 'tf_Compute' in e['args']['name']}
    ops = {}
    for e in events:
        if e.get('ph') == 'X' and (e['pid'], e['tid']) in threads and not e['name'].startswith(
                ('ThreadpoolListener', 'ExecutorState')):
            name = e['name'].removeprefix('_MklNative').removeprefix('_Mkl')
            ops[name] = ops.get(name, 0.) + e['dur'] / 1e3 / steps
    return dict(sorted(ops.items(), key=lambda kv: -kv[1]))


def _pointwise_needed(model, size):
    """The share of the pointwise convs' multiply-adds that the math needs: per mixed op of E edges,
    C channels, six block-diagonal (E*C)^2 matmuls where E separate C^2 ones would do; the cells'
    preprocessing and FactorizedReduce convs are dense (needed whole). Backward passes scale both alike."""
    from ladnas_tf.graph import walk
    executed = needed = 0
    for plan, cell in zip(walk.cell_plans('cifar', model.channels, model.num_layers, size), model.cells_):
        dense = plan.size ** 2 * (plan.c_prev_prev + plan.c_prev) * plan.c  # pre0 (either form) and pre1
        for op in cell.mixed:
            side = walk.halve(plan.size) if op.strides == 2 else plan.size
            pixels, e, c = side * side, op.num_edges, op.channels
            executed += 6 * pixels * (e * c) ** 2
            needed += 6 * pixels * e * c ** 2
            dense += pixels * e * c * c if op.strides == 2 else 0  # FactorizedReduce: 2 convs to C/2 per edge
        executed, needed = executed + dense, needed + dense
    return needed / executed


def op_groups(ops):
    """{group: ms per step} of an {op type: ms per step} (OP_GROUPS; the rest is 'other')."""
    groups = {name: 0. for name, _ in OP_GROUPS}
    groups['other'] = 0.
    for op, ms in ops.items():
        group = next((name for name, prefixes in OP_GROUPS if op.startswith(prefixes)), 'other')
        groups[group] += ms
    return groups


def kernel_floor(ops, pointwise_needed):
    """ms per step of the step's own kernels (FLOOR_GROUPS, the pointwise convs at their needed share)."""
    groups = op_groups(ops)
    return sum(groups[g] for g in FLOOR_GROUPS) + groups['pointwise conv'] * pointwise_needed


def run_torch(args):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.import_rss = _rss_gb()

    class ReLUConvBN(nn.Sequential):
        def __init__(self, c_in, c_out, k, stride, pad):
            super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, pad, bias=False),
                             nn.BatchNorm2d(c_out, affine=False))

    class DilConv(nn.Sequential):
        def __init__(self, c, k, stride, pad, dil):
            super().__init__(nn.ReLU(), nn.Conv2d(c, c, k, stride, pad, dilation=dil, groups=c, bias=False),
                             nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, affine=False))

    class SepConv(nn.Sequential):
        def __init__(self, c, k, stride, pad):
            super().__init__(DilConv(c, k, stride, pad, 1), DilConv(c, k, 1, pad, 1))

    class FactorizedReduce(nn.Module):
        def __init__(self, c_in, c_out):
            super().__init__()
            self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
            self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
            self.bn = nn.BatchNorm2d(c_out, affine=False)

        def forward(self, x):
            x = F.relu(x)
            return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], 1))

    class Zero(nn.Module):
        def __init__(self, stride):
            super().__init__()
            self.stride = stride

        def forward(self, x):
            return x[:, :, ::self.stride, ::self.stride].mul(0.)

    def make(name, c, stride):
        return {
            'none': lambda: Zero(stride),
            'max_pool_3x3': lambda: nn.Sequential(nn.MaxPool2d(3, stride, 1), nn.BatchNorm2d(c, affine=False)),
            'avg_pool_3x3': lambda: nn.Sequential(nn.AvgPool2d(3, stride, 1, count_include_pad=False),
                                                  nn.BatchNorm2d(c, affine=False)),
            'skip_connect': lambda: nn.Identity() if stride == 1 else FactorizedReduce(c, c),
            'sep_conv_3x3': lambda: SepConv(c, 3, stride, 1),
            'sep_conv_5x5': lambda: SepConv(c, 5, stride, 2),
            'dil_conv_3x3': lambda: DilConv(c, 3, stride, 2, 2),
            'dil_conv_5x5': lambda: DilConv(c, 5, stride, 4, 2),
        }[name]()

    primitives = ['none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3', 'sep_conv_5x5',
                  'dil_conv_3x3', 'dil_conv_5x5']
    k_pc = 4 if args.method == 'pcdarts' else 1

    def shuffle(x, groups):
        b, c, h, w = x.shape
        return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)

    class MixedOp(nn.Module):
        def __init__(self, c, stride):
            super().__init__()
            self.ops = nn.ModuleList(make(p, c // k_pc, stride) for p in primitives)
            self.mp = nn.MaxPool2d(2, 2)

        def forward(self, x, w):
            if k_pc == 1:
                return sum(wi * op(x) for wi, op in zip(w, self.ops))
            c = x.shape[1]
            part, rest = x[:, :c // k_pc], x[:, c // k_pc:]
            out = sum(wi * op(part) for wi, op in zip(w, self.ops))
            rest = rest if out.shape[2] == x.shape[2] else self.mp(rest)
            return shuffle(torch.cat([out, rest], 1), k_pc)

    class Cell(nn.Module):
        def __init__(self, c_pp, c_p, c, reduction, reduction_prev):
            super().__init__()
            self.reduction = reduction
            self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
            self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0)
            self.ops = nn.ModuleList(MixedOp(c, 2 if reduction and j < 2 else 1)
                                     for i in range(4) for j in range(2 + i))

        def forward(self, s0, s1, w, w2):
            states, offset = [self.pre0(s0), self.pre1(s1)], 0
            for i in range(4):
                s = sum((1. if w2 is None else w2[offset + j]) * self.ops[offset + j](h, w[offset + j])
                        for j, h in enumerate(states))
                offset += len(states)
                states.append(s)
            return torch.cat(states[-4:], 1)

    class Network(nn.Module):
        def __init__(self, c, layers, classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 3 * c, 3, padding=1, bias=False), nn.BatchNorm2d(3 * c))
            c_pp, c_p, c_curr, reduction_prev = 3 * c, 3 * c, c, False
            self.cells = nn.ModuleList()
            for i in range(layers):
                reduction = i in (layers // 3, 2 * layers // 3)
                c_curr *= 2 if reduction else 1
                self.cells.append(Cell(c_pp, c_p, c_curr, reduction, reduction_prev))
                reduction_prev = reduction
                c_pp, c_p = c_p, 4 * c_curr
            self.classifier = nn.Linear(c_p, classes)
            self.alphas = [(1e-3 * torch.randn(14, 8)).requires_grad_() for _ in range(2)]
            self.betas = [(1e-3 * torch.randn(14)).requires_grad_() for _ in range(2)] if k_pc > 1 else []

        def edge_weights(self, beta):
            if beta is None:
                return None
            return torch.cat([F.softmax(beta[a:b], -1) for a, b in ((0, 2), (2, 5), (5, 9), (9, 14))])

        def forward(self, x):
            s0 = s1 = self.stem(x)
            betas = self.betas or [None, None]
            for cell in self.cells:
                i = 1 if cell.reduction else 0
                s0, s1 = s1, cell(s0, s1, F.softmax(self.alphas[i], -1), self.edge_weights(betas[i]))
            return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))

    start = _clock()
    model = Network(args.channels, args.layers)
    w_opt = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(model.alphas + model.betas, 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    args.build = _since(start)

    def step():
        a_opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        a_opt.step()
        w_opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.)
        w_opt.step()

    step()
    first = _since(start)
    start = _clock()
    for _ in range(args.steps):
        step()
    total = _since(start)
    return first, total, sum(p.numel() for p in model.parameters())


def _child(args):
    if args.order == 'second' and args.framework == 'torch':
        raise SystemExit('the PyTorch side implements the first-order step only')
    fn = run_torch if args.framework == 'torch' else run_tensorflow
    args.profile_steps = args.profile_steps if args.framework == 'tensorflow' else 0
    first, total, params = fn(args)
    peak = _peak_rss_gb()
    extra = {'ops_ms': args.ops, 'pointwise_needed': args.pointwise_needed} if args.profile_steps else {}
    print(json.dumps({'build_wall': args.build[0], 'build_cpu': args.build[1],
                      'first_wall': first[0], 'first_cpu': first[1], 'step_wall': total[0] / args.steps,
                      'step_cpu': total[1] / args.steps, 'peak_rss_gb': peak,
                      'above_import_gb': peak - args.import_rss, 'params': params, **extra}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--channels', type=int, default=8)
    parser.add_argument('--layers', type=int, default=5)
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--method', choices=('darts', 'pcdarts'), default='darts')
    parser.add_argument('--order', choices=('first', 'second'), default='first')
    parser.add_argument('--repeats', type=int, default=1, help='Runs per framework, taking turns (medians).')
    parser.add_argument('--profile_steps', type=int, default=0,
                        help='Steps to profile per tensorflow run after the timed ones (op times and the floor).')
    parser.add_argument('--settings', help='Several settings in one run: C/layers/batch,... (e.g. 8/5/32,16/8/64); '
                        'overrides --channels, --layers, --batch.')
    parser.add_argument('--frameworks', default=','.join(DEFAULT_FRAMEWORKS),
                        help=f'Comma-separated subset of {",".join(FRAMEWORKS)} (torch is the reference).')
    parser.add_argument('--note', default='', help='What else ran on the machine meanwhile (kept in the JSON).')
    parser.add_argument('--json', help='Also write the figures to this JSON file.')
    parser.add_argument('--framework', choices=FRAMEWORKS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.framework:
        return _child(args)
    frameworks = [f for f in FRAMEWORKS if f in args.frameworks.split(',')]
    settings = [tuple(int(v) for v in setting.split('/')) for setting in args.settings.split(',')] \
        if args.settings else [(args.channels, args.layers, args.batch)]
    records = [_measure(args, frameworks, *setting) for setting in settings]
    if args.json:
        from benchmarks import save_json
        config = {k: v for k, v in vars(args).items() if k not in ('json', 'framework', 'note')}
        figures = records[0] if len(records) == 1 else {'settings': records}
        save_json(args.json, {**figures, 'also_running': args.note}, config)


KEYS = ('build_wall', 'build_cpu', 'first_wall', 'first_cpu', 'step_wall', 'step_cpu', 'peak_rss_gb',
        'above_import_gb', 'params')


def _measure(args, frameworks, channels, layers, batch):
    """Runs every framework args.repeats times at one setting, taking turns; prints and returns the medians."""
    child_argv = [f'--{k}={getattr(args, k)}' for k in ('size', 'steps', 'threads', 'method', 'order',
                                                        'profile_steps')]
    child_argv += [f'--channels={channels}', f'--layers={layers}', f'--batch={batch}']
    runs = {f: [] for f in frameworks}
    loads = []
    for _ in range(args.repeats):
        for framework in frameworks:
            cmd = [sys.executable, '-m', 'benchmarks.supernet_step', '--framework', framework] + child_argv
            env = {**os.environ, 'TF_ENABLE_ONEDNN_OPTS': '0'} if framework == 'tf-eigen' else None
            before = os.getloadavg()
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
            loads.append({'framework': framework, 'before': before, 'after': os.getloadavg()})
            if out.returncode:
                print(f'{framework} failed:\n{out.stderr[-2000:]}')
                continue
            runs[framework].append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = {f: {k: statistics.median(r[k] for r in rs) for k in KEYS} for f, rs in runs.items() if rs}
    print(f'config: C={channels} layers={layers} batch={batch} {args.size}x{args.size} '
          f'{args.method} {args.order} order, {args.threads} thread(s), {args.steps} timed steps, '
          f'{args.repeats} run(s) each (medians)')
    print('load average (1 min) before/after each run: ' + '; '.join(
        f'{entry["framework"]} {entry["before"][0]:.2f}/{entry["after"][0]:.2f}' for entry in loads))
    print(f'{"":12s}' + ''.join(f'{k:>16s}' for k in KEYS))
    for framework, r in results.items():
        print(f'{framework:12s}' + ''.join(f'{r[k]:16.3f}' if k != 'params' else f'{int(r[k]):16d}' for k in KEYS))
    ratios = {f: {k: results[f][k] / results['torch'][k] for k in KEYS}
              for f in frameworks if f != 'torch' and f in results and 'torch' in results}
    for framework, r in ratios.items():
        print(f'{framework + "/pt":12s}' + ''.join(f'{r[k]:16.2f}' for k in KEYS))
    record = {'setting': {'channels': channels, 'layers': layers, 'batch': batch}, 'frameworks': results,
              'over_torch': ratios, 'runs': runs, 'load_average': loads}
    profiled = [r for r in runs.get('tensorflow', []) if 'ops_ms' in r]
    if profiled and 'torch' in results:
        record['profile'] = _profile_report(profiled, results['torch']['step_cpu'] * 1e3)
    return record


def _profile_report(profiled, torch_ms):
    """Op groups and the kernel floor (medians over the profiled runs), in ms per step and over PyTorch's step."""
    groups = {g: statistics.median(op_groups(r['ops_ms'])[g] for r in profiled) for g in op_groups({})}
    floor = statistics.median(kernel_floor(r['ops_ms'], r['pointwise_needed']) for r in profiled)
    profiled_ms = sum(groups.values())
    print(f'profiled tensorflow step {profiled_ms:.0f} ms, by op group: ' + ', '.join(
        f'{g} {ms:.0f} ms ({100 * ms / profiled_ms:.1f}%)' for g, ms in groups.items()))
    print(f'kernel floor {floor:.0f} ms = {floor / torch_ms:.3f}x PyTorch\'s step '
          f'(pointwise convs at {100 * profiled[0]["pointwise_needed"]:.1f}% of their executed multiply-adds)')
    return {'groups_ms': groups, 'profiled_step_ms': profiled_ms, 'pointwise_needed': profiled[0]['pointwise_needed'],
            'floor_ms': floor, 'floor_over_torch_step': floor / torch_ms,
            'profiled_step_over_torch_step': profiled_ms / torch_ms}


if __name__ == '__main__':
    main()
