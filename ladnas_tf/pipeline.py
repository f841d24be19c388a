"""From data to a deployable file in one run directory: the latency-aware search (search.py), training
the derived genotype from scratch (train.py), float32 and int8 TFLite export with interpreter accuracy
(train.export_tflite / export.py), latency of those files on the LPM's target, and one report.

The pipeline follows the deployment: search.deploy_format (float32 or int8; default: the predictor's
numeric format) picks the predictor of that format (an int8 deployment with the default predictor
searches with the shipped int8 one; a predictor of another format is refused unless force_format), and
the report sets the deployed file's measured latency beside the predicted one, each a multiple of
DARTS_V2 on its own device (the predictor's; this machine), naming both.

    <run_dir>/pipeline.json      the configuration (a run of another one is refused without overwrite)
    <run_dir>/search/            search.search's directory (genotype.json, cells/, summary.json, ...)
    <run_dir>/train/             train.train's directory (final.keras, history.json, summary.json, ...)
    <run_dir>/export/            model_float32.tflite, model_int8.tflite (+ their export JSON), export.json
    <run_dir>/latency.json       the files timed on the LPM's target, each bracketed by DARTS_V2 in the
                                 same network and numeric format; the LPM's prediction
    <run_dir>/report.json, report.md

Each stage is skipped when its last output exists (written last, atomically) and otherwise resumed:
the search and the training from their own checkpoints, the export and the timing redone whole (they
take seconds). A run killed in any stage and rerun ends with the files of an uninterrupted run.
"""
import dataclasses
import json
import os
import time

from ladnas_tf import genotypes, objective, run_dir as run_dir_lib, search as search_lib, train as train_lib
from ladnas_tf.bad_input import BadInput
from ladnas_tf.graph.setting import Setting
from ladnas_tf.profiling.targets import registry as targets
from ladnas_tf.profiling import profiler
from ladnas_tf.profiling.targets.base import numeric_format, tflite_file
from ladnas_tf.run_dir import read_json, write_json, write_text
from ladnas_tf.settings import nested, option

CONFIG_FILE = 'pipeline.json'
LATENCY_FILE, REPORT_JSON, REPORT_MD = 'latency.json', 'report.json', 'report.md'
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


OUTPUTS = (CONFIG_FILE, 'search', 'train', 'export', LATENCY_FILE, REPORT_JSON, REPORT_MD)
# Settings recorded after pipeline directories were first written -> what an older pipeline.json implies.
ADDED = {f'search.{key}': value for key, value in search_lib.ADDED.items()}


def prepare_run_dir(run_dir, config, overwrite=False):
    """Creates run_dir for config, or accepts one of the same config to resume; anything else is
    refused (one line, nothing touched) unless overwrite, which removes our outputs first."""
    return run_dir_lib.prepare(run_dir, run_settings(config), CONFIG_FILE, OUTPUTS, overwrite, added=ADDED,
                               what='pipeline', error=PipelineError)


def run_settings(config):
    """What identifies a pipeline in its run directory: its settings, the search's as search.run_settings
    records them (its predictors by directory and content)."""
    return {**config.to_json(), 'search': search_lib.run_settings(config.search)}


def deploy_format(config, predictor):
    """The numeric format the user deploys: search.deploy_format, else the predictor's, else float32."""
    if config.search.deploy_format:
        return config.search.deploy_format
    return numeric_format(predictor.target_description) if predictor is not None else 'float32'


# ---- the stages ----

def _latency_target(config, predictor):
    """(the LPM's target ready to time, or None; why not). Without an LPM the CPU (search.eval_target)."""
    description = predictor.target_description if predictor is not None else config.search.eval_target()
    return targets.reachable(description)


def run_search(config, run_dir, log, predictors=None):
    directory = os.path.join(run_dir, 'search')
    if os.path.isfile(os.path.join(directory, search_lib.SUMMARY_FILE)):
        log('search: done before, skipped')
        return read_json(os.path.join(directory, search_lib.SUMMARY_FILE))
    return search_lib.search(config.search, directory, progress=False, log=log,
                             measure_latency=config.measure_searched, predictors=predictors)


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


def run_latency(config, run_dir, exported, searched, log, predictor=None):
    """The exported files timed on the LPM's target as the profiler times a table row, each bracketed by
    DARTS_V2 in the same network and numeric format (so latency / reference_ms is the file's multiple of
    DARTS_V2 on this machine), beside the LPM's prediction for the genotype at its own setting."""
    path = os.path.join(run_dir, LATENCY_FILE)
    if os.path.isfile(path):
        log('latency: done before, skipped')
        return read_json(path)
    target, why = _latency_target(config, predictor)
    result = {'searched': searched.get('latency') or {}}
    if target is not None and target.name not in targets.FILE_KINDS:
        target, why = None, f'target {target.name} does not run .tflite files'
    if target is None:
        result['files_not_timed'] = why
        log(f'latency: files not timed ({why}); predicted only')
    else:
        description = target.describe()
        result.update(target=target.name, threads=description.get('threads', 1), device=description['device'])
        result['files'] = {name: _time_file(target, description, os.path.join(run_dir, 'export', entry['file']),
                                            name, config.latency_runs)
                           for name, entry in exported['files'].items()}
    write_json(path, result)
    return result


def _time_file(target, description, path, file_format, runs):
    """One exported file (numeric format file_format) timed bracketed by DARTS_V2 written directly in the
    file's network and format: the file's latency as a multiple of DARTS_V2 on this machine, named."""
    with open(path, 'rb') as f:
        content = f.read()
    setting = exported_setting(path)
    reference = tflite_file(genotypes.DARTS_V2, setting, 'writer', file_format)[0]
    timed = profiler.time_files(target, {file_format: content}, runs=runs, reference=reference)[file_format]
    return {**timed, 'vs_reference': timed['latency_ms'] / timed['reference_ms'], 'setting': setting.key,
            'measured_on': objective.device_name({**description, 'numeric_format': file_format})}


def exported_setting(path):
    """The evaluation network of an exported .tflite file, from export's summary JSON beside it."""
    from ladnas_tf import export
    summary = read_json(export.summary_path(path))
    return Setting(summary['setting'], summary['channels'], summary['cells'], summary['image_size'], 1,
                   summary['num_classes'])


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


def report(config, run_dir, searched, trained, exported, latency, seconds, deployed='float32'):
    """report.json (every figure, its split, source or device named) and report.md (cells and one table).
    deployed: the numeric format the user deploys, whose file's latency is set beside the prediction."""
    files = latency.get('files', {})
    rows = [{'model': 'Keras (final.keras)', 'test_top1': trained['test_top1'], 'file': None, 'file_bytes': None,
             'latency_ms': None, 'vs_darts_v2': None, 'measured_on': None}]
    for name, entry in exported['files'].items():
        timed = files.get(name, {})
        rows.append({'model': f'TFLite {name}', 'test_top1': entry['test_top1'],
                     'file': os.path.join('export', entry['file']), 'file_bytes': entry['file_bytes'],
                     'latency_ms': timed.get('latency_ms'), 'vs_darts_v2': timed.get('vs_reference'),
                     'reference_ms': timed.get('reference_ms'), 'setting': timed.get('setting'),
                     'measured_on': timed.get('measured_on')})
    lat = latency.get('searched', {})
    payload = {
        'genotype': searched['genotype'], 'genotype_id': searched['genotype_id'], 'dataset': config.search.dataset,
        'cells': {name: _cell_picture(run_dir, name) for name in ('normal', 'reduce')},
        'cell_nodes': {name: cell_text(searched['genotype_json'][name]) for name in ('normal', 'reduce')},
        'models': rows, 'latency_target': latency.get('target'), 'latency_threads': latency.get('threads'),
        'latency_device': latency.get('device'),
        'files_not_timed': latency.get('files_not_timed'),
        'searched_network': {key: lat.get(key) for key in SEARCHED_KEYS},
        'deployed': _deployed(deployed, lat, rows),
        'search': {k: searched.get(k) for k in ('steps', 'supernet_valid_accuracy', 'seconds')},
        'train': {k: trained.get(k) for k in ('epochs', 'params', 'macs', 'image_size', 'best_epoch',
                                              'best_validation_top1', 'validation_top1', 'seconds')},
        'split_of': {'test_top1': f"test split of {config.search.dataset} (final epoch; "
                                  f"{exported['test_images']} images through the interpreter for TFLite)",
                     'supernet_valid_accuracy': 'the search\'s architecture half of the training split',
                     'validation_top1': 'validation split held out of train (chooses best.keras)'},
        'seconds': seconds}
    write_json(os.path.join(run_dir, REPORT_JSON), payload)
    write_text(os.path.join(run_dir, REPORT_MD), _markdown(payload))
    return payload


# The searched genotype at the LPM's setting: predicted (on the predictor's device) and measured (here).
SEARCHED_KEYS = ('setting', 'predicted_ms', 'unit_ms', 'predicted_vs_reference', 'predicted_on', 'measured_ms',
                 'reference_ms', 'measured_vs_reference', 'measured_on')


def _deployed(file_format, searched, rows):
    """The deployed file beside the prediction: each a multiple of DARTS_V2 on its own device (the
    predictor's at its setting; this machine's for the file's network), both devices named."""
    row = next((r for r in rows if r['model'] == f'TFLite {file_format}'), {})
    return {'format': file_format, 'file': row.get('file'),
            'predicted_vs_reference': searched.get('predicted_vs_reference'),
            'predicted_ms': searched.get('predicted_ms'), 'predicted_reference_ms': searched.get('unit_ms'),
            'predicted_on': searched.get('predicted_on'), 'predicted_setting': searched.get('setting'),
            'measured_vs_reference': row.get('vs_darts_v2'), 'measured_ms': row.get('latency_ms'),
            'measured_reference_ms': row.get('reference_ms'), 'measured_on': row.get('measured_on'),
            'measured_setting': row.get('setting')}


def latency_lines(payload):
    """The report's latency sentences (report.md and the tool's screen): every prediction beside its
    measurement, each a multiple of DARTS_V2 on its own device, milliseconds only with their device."""
    lines = []
    s = payload['searched_network']
    if objective.comparison_text(s):
        lines.append(f"The genotype at the LPM's setting ({s['setting']}): {objective.comparison_text(s)}.")
    d = payload.get('deployed') or {}
    predicted = objective.relative_text('predicted', d.get('predicted_ms'), d.get('predicted_reference_ms'),
                                        d.get('predicted_on'))
    measured = objective.relative_text('measured', d.get('measured_ms'), d.get('measured_reference_ms'),
                                       d.get('measured_on'))
    if predicted or measured:
        at = lambda text, setting: f'{text} at {setting}' if text else ''
        both = '; '.join(p for p in (at(predicted, d.get('predicted_setting')),
                                     at(measured, f"{d.get('measured_setting')} (the file)")) if p)
        lines.append(f"Deployed as {d['format']} ({d.get('file') or 'not exported'}): {both}.")
    return lines


def _markdown(p):
    lines = [f"# Pipeline report: {p['dataset']}", '', f"Genotype (`{p['genotype_id']}`): `{p['genotype']}`", '']
    for name, picture in p['cells'].items():
        lines += [f'{name} cell (output: the concatenation of nodes 0-3):', '']
        if picture and picture.endswith('.png'):
            lines += [f'![{name} cell]({picture})', '']
        elif picture:
            lines += [f'[{picture}]({picture}) (graphviz DOT; install graphviz for a PNG)', '']
        lines += ['    ' + node for node in p['cell_nodes'][name]] + ['']
    machine = (f"{p['latency_device']} [{p['latency_target']}, {p['latency_threads']} thread(s)]"
               if p['latency_device'] else None)
    lines += ['Test top-1 on the test split (final epoch); latency: median of the interpreter runs, batch 1, '
              + (f'on {machine}' if machine else 'not measured')
              + ', each file bracketed by DARTS_V2 in the same network and numeric format.', '',
              '| model | test top-1 % | file | bytes | latency x DARTS_V2 | latency ms (that machine) |',
              '|---|---|---|---|---|---|']
    for r in p['models']:
        lines.append(f"| {r['model']} | {_fmt(r['test_top1'])} | {r['file'] or '-'} | "
                     f"{_fmt(r['file_bytes'], ',')} | {_fmt(r.get('vs_darts_v2'))} | {_fmt(r['latency_ms'], '.3f')} |")
    lines += [''] + latency_lines(p)
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
    # Loaded once for the run; a predictor of another numeric format than the deployment is refused here,
    # before anything is written.
    predictors = config.search.load_predictors()
    train_lib.load_splits(config.search.dataset, config.search.data_dir, config.recipe)  # bad data: before any write
    prepare_run_dir(run_dir, config, overwrite)
    start = time.perf_counter()
    searched = run_search(config, run_dir, log, predictors)
    from ladnas_tf import search_space
    genotype = search_space.from_json(json.dumps(searched["genotype_json"]))
    trained = run_train(config, run_dir, genotype, log, train_step_callback)
    exported = run_export(config, run_dir, log)
    latency = run_latency(config, run_dir, exported, searched, log, predictors[0])
    return report(config, run_dir, searched, trained, exported, latency, round(time.perf_counter() - start, 1),
                  deploy_format(config, predictors[0]))
