"""From data to a deployable file in one run directory: the latency-aware search (search.py), training
the derived genotype from scratch (train.py), float32 and int8 TFLite export with interpreter accuracy
(train.export_tflite / export.py), latency of those files on the LPM's target, and one report.

    <run_dir>/pipeline.json      the configuration (a run of another one is refused without overwrite)
    <run_dir>/search/            search.search's directory (genotype.json, cells/, summary.json, ...)
    <run_dir>/train/             train.train's directory (final.keras, history.json, summary.json, ...)
    <run_dir>/export/            model_float32.tflite, model_int8.tflite (+ their export JSON), export.json
    <run_dir>/latency.json       the files timed on the LPM's target; the LPM's prediction
    <run_dir>/report.json, report.md

Each stage is skipped when its last output exists (written last, atomically) and otherwise resumed:
the search and the training from their own checkpoints, the export and the timing redone whole (they
take seconds). A run killed in any stage and rerun ends with the files of an uninterrupted run.
"""
import dataclasses
import json
import os
import time

from ladnas_tf import run_dir as run_dir_lib, search as search_lib, train as train_lib
from ladnas_tf.bad_input import BadInput
from ladnas_tf.lpm import registry
from ladnas_tf.profiling.targets import registry as targets
from ladnas_tf.profiling import profiler
from ladnas_tf.run_dir import read_json, write_json, write_text
from ladnas_tf.settings import nested, option

CONFIG_FILE = 'pipeline.json'
STAGES = ('search', 'train', 'export', 'latency', 'report')


class PipelineError(BadInput):
    """A pipeline that cannot run as asked; the message is one line naming the problem."""


# The training of the quick pipeline: a small network on the digits, minutes on a CPU.
QUICK_RECIPE = train_lib.Recipe(channels=8, layers=5, image_size=16, epochs=10, batch_size=64, learning_rate=0.05,
                                auxiliary=False, drop_path_prob=0.1, cutout=4, validation_fraction=0.1)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything that shapes a pipeline's outputs. The training reads the search's dataset. The
    defaults are the quick pipeline (configs/pipeline_quick.cfg)."""
    search: search_lib.SearchConfig = nested(search_lib.SearchConfig, 'The search.', prefix='search_')
    recipe: train_lib.Recipe = nested(train_lib.Recipe, 'The training of the derived network.', prefix='',
                                      default=QUICK_RECIPE)
    calibration_images: int = option(256, 'Training images calibrating the int8 file.')
    tflite_eval_limit: int = option(None, 'Test images run through the interpreter (default: all).')
    latency_runs: int = option(50, 'Timed interpreter runs per file.')
    measure_searched: bool = option(True, "Also time the derived genotype at the LPM's setting (beside its "
                                     'prediction).')

    def check(self):
        self.search.check()
        self.recipe.check()
        if self.calibration_images < 1 or self.latency_runs < 2:
            raise PipelineError(f'calibration_images must be >= 1 and latency_runs >= 2, got '
                                f'{self.calibration_images} and {self.latency_runs}')
        if self.tflite_eval_limit is not None and self.tflite_eval_limit < 1:
            raise PipelineError(f'tflite_eval_limit must be positive, got {self.tflite_eval_limit}')

    def to_json(self):
        settings = json.loads(json.dumps(dataclasses.asdict(self)))
        return {**settings, 'search': self.search.to_json()}


OUTPUTS = (CONFIG_FILE, 'search', 'train', 'export', 'latency.json', 'report.json', 'report.md')
# Settings recorded after pipeline directories were first written -> what an older pipeline.json implies.
ADDED = {f'search.{key}': value for key, value in search_lib.ADDED.items()}


def prepare_run_dir(run_dir, config, overwrite=False):
    """Creates run_dir for config, or accepts one of the same config to resume; anything else is
    refused (one line, nothing touched) unless overwrite, which removes our outputs first."""
    return run_dir_lib.prepare(run_dir, config.to_json(), CONFIG_FILE, OUTPUTS, overwrite, added=ADDED,
                               what='pipeline', error=PipelineError)


# ---- the stages ----

def _latency_target(lpm_dir):
    """(the LPM's target ready to time, or None; why not). cpu_tflite without an LPM."""
    description = registry.target_description(lpm_dir) if lpm_dir else {'target': 'cpu_tflite'}
    return targets.reachable(description)


def run_search(config, run_dir, log):
    directory = os.path.join(run_dir, 'search')
    if os.path.isfile(os.path.join(directory, 'summary.json')):
        log('search: done before, skipped')
        return read_json(os.path.join(directory, 'summary.json'))
    return search_lib.search(config.search, directory, progress=False, log=log,
                             measure_latency=config.measure_searched)


def run_train(config, run_dir, genotype, log, step_callback=None):
    directory = os.path.join(run_dir, 'train')
    return train_lib.train(genotype, config.recipe, directory, config.search.dataset, config.search.data_dir,
                           verbose=0, log=log, step_callback=step_callback)


def run_export(config, run_dir, log):
    """float32 and int8 (post-training) files of final.keras and their test top-1 through the interpreter."""
    directory = os.path.join(run_dir, 'export')
    done = os.path.join(directory, 'export.json')
    if os.path.isfile(done):
        log('export: done before, skipped')
        return read_json(done)
    import keras
    from ladnas_tf import data
    os.makedirs(directory, exist_ok=True)
    model = keras.models.load_model(os.path.join(run_dir, 'train', 'final.keras'))
    sets = [data.load(config.search.dataset, split, config.search.data_dir, config.recipe.image_size)
            for split in ('train', 'test')]
    files = train_lib.export_tflite(model, directory, *sets, config.calibration_images, config.tflite_eval_limit,
                                    overwrite=True)  # leftovers of a killed export are replaced
    test_images = min(sets[1].num_examples, config.tflite_eval_limit or sets[1].num_examples)
    result = {'files': files, 'test_images': test_images,
              'calibration_images': config.calibration_images}
    write_json(done, result)
    return result


def run_latency(config, run_dir, exported, searched, log):
    """The exported files timed on the LPM's target as the profiler times a table row (each bracketed by
    the float32 file, the reference here), beside the LPM's prediction for the genotype at its own setting."""
    path = os.path.join(run_dir, 'latency.json')
    if os.path.isfile(path):
        log('latency: done before, skipped')
        return read_json(path)
    target, why = _latency_target(config.search.lpm_dir)
    result = {'searched': searched.get('latency') or {}}
    if target is not None and target.name not in targets.FILE_KINDS:
        target, why = None, f'target {target.name} does not run .tflite files'
    if target is None:
        result['files_not_timed'] = why
        log(f'latency: files not timed ({why}); predicted only')
    else:
        description = target.describe()
        result.update(target=target.name, threads=description.get('threads', 1), device=description['device'])
        files = {}
        for name, entry in exported['files'].items():
            with open(os.path.join(run_dir, 'export', entry['file']), 'rb') as f:
                files[name] = f.read()
        result['files'] = profiler.time_files(target, files, runs=config.latency_runs)
    write_json(path, result)
    return result


# ---- the report ----

def _cell_picture(run_dir, name):
    for ext in ('png', 'dot'):
        rel = os.path.join('search', 'cells', f'{name}.{ext}')
        if os.path.isfile(os.path.join(run_dir, rel)):
            return rel
    return None


def cell_text(cell):
    """A discrete cell as one line per node: "node 0 = sep_conv_3x3(c_{k-1}) + skip_connect(c_{k-2})"."""
    name = lambda i: ('c_{k-2}', 'c_{k-1}')[i] if i < 2 else f'node {i - 2}'
    return [f'node {k // 2} = ' + ' + '.join(f'{op}({name(i)})' for op, i in cell[k:k + 2])
            for k in range(0, len(cell), 2)]


def _fmt(value, spec='.2f', unit=''):
    return '-' if value is None else f'{value:{spec}}{unit}'


def report(config, run_dir, searched, trained, exported, latency, seconds):
    """report.json (every figure, its split or source named) and report.md (cells and one table)."""
    files = latency.get('files', {})
    rows = [{'model': 'Keras (final.keras)', 'test_top1': trained['test_top1'], 'file': None, 'file_bytes': None,
             'latency_ms': None}]
    for name, entry in exported['files'].items():
        rows.append({'model': f'TFLite {name}', 'test_top1': entry['test_top1'],
                     'file': os.path.join('export', entry['file']), 'file_bytes': entry['file_bytes'],
                     'latency_ms': files.get(name, {}).get('latency_ms')})
    lat = latency.get('searched', {})
    payload = {
        'genotype': searched['genotype'], 'genotype_id': searched['genotype_id'], 'dataset': config.search.dataset,
        'cells': {name: _cell_picture(run_dir, name) for name in ('normal', 'reduce')},
        'cell_nodes': {name: cell_text(searched['genotype_json'][name]) for name in ('normal', 'reduce')},
        'models': rows, 'latency_target': latency.get('target'), 'latency_threads': latency.get('threads'),
        'latency_device': latency.get('device'),
        'files_not_timed': latency.get('files_not_timed'),
        'searched_network': {'setting': lat.get('setting'), 'predicted_ms': lat.get('predicted_ms'),
                             'measured_ms': lat.get('measured_ms'),
                             'measured_vs_reference': lat.get('measured_vs_reference')},
        'search': {k: searched.get(k) for k in ('steps', 'supernet_valid_accuracy', 'seconds')},
        'train': {k: trained.get(k) for k in ('epochs', 'params', 'macs', 'image_size', 'best_epoch',
                                              'best_validation_top1', 'validation_top1', 'seconds')},
        'split_of': {'test_top1': f"test split of {config.search.dataset} (final epoch; "
                                  f"{exported['test_images']} images through the interpreter for TFLite)",
                     'supernet_valid_accuracy': 'the search\'s architecture half of the training split',
                     'validation_top1': 'validation split held out of train (chooses best.keras)'},
        'seconds': seconds}
    write_json(os.path.join(run_dir, 'report.json'), payload)
    write_text(os.path.join(run_dir, 'report.md'), _markdown(payload))
    return payload


def _markdown(p):
    lines = [f"# Pipeline report: {p['dataset']}", '', f"Genotype (`{p['genotype_id']}`): `{p['genotype']}`", '']
    for name, picture in p['cells'].items():
        lines += [f'{name} cell (output: the concatenation of nodes 0-3):', '']
        if picture and picture.endswith('.png'):
            lines += [f'![{name} cell]({picture})', '']
        elif picture:
            lines += [f'[{picture}]({picture}) (graphviz DOT; install graphviz for a PNG)', '']
        lines += ['    ' + node for node in p['cell_nodes'][name]] + ['']
    lines += [f"Test top-1 on the test split (final epoch); latency: median of {p['latency_target']} "
              f"interpreter runs, {p['latency_threads']} thread(s), batch 1.", '',
              '| model | test top-1 % | file | bytes | latency ms |', '|---|---|---|---|---|']
    for r in p['models']:
        lines.append(f"| {r['model']} | {_fmt(r['test_top1'])} | {r['file'] or '-'} | "
                     f"{_fmt(r['file_bytes'], ',')} | {_fmt(r['latency_ms'], '.3f')} |")
    s = p['searched_network']
    lines += ['', f"The genotype at the LPM's setting ({s['setting'] or '-'}): predicted {_fmt(s['predicted_ms'])} ms, "
              f"measured {_fmt(s['measured_ms'])} ms on {p['latency_target']} "
              f"({_fmt(s['measured_vs_reference'])}x DARTS_V2 timed alongside: the figure a loaded machine "
              "does not move)."]
    if p['files_not_timed']:
        lines += ['', f"Files not timed: {p['files_not_timed']} (predicted latency only)."]
    t = p['train']
    if t.get('best_epoch'):
        lines += ['', f"best.keras: epoch {t['best_epoch']}, validation top-1 {_fmt(t['best_validation_top1'])}% "
                      '(the exported files are the final epoch).']
    return '\n'.join(lines) + '\n'


def run(config, run_dir, overwrite=False, log=print, train_step_callback=None):
    """Runs (or resumes, or re-reports) the pipeline in run_dir; returns report.json's content."""
    config.check()
    train_lib.load_splits(config.search.dataset, config.search.data_dir, config.recipe)  # bad data: before any write
    prepare_run_dir(run_dir, config, overwrite)
    start = time.perf_counter()
    searched = run_search(config, run_dir, log)
    from ladnas_tf import search_space
    genotype = search_space.from_json(json.dumps(searched["genotype_json"]))
    trained = run_train(config, run_dir, genotype, log, train_step_callback)
    exported = run_export(config, run_dir, log)
    latency = run_latency(config, run_dir, exported, searched, log)
    return report(config, run_dir, searched, trained, exported, latency, round(time.perf_counter() - start, 1))
