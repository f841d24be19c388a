"""The architecture objective of the paper's Eq. 3, L_val + lambda_ * LAT(alpha), or the FLOPs-aware
baseline L_val + eta * FLOPs(alpha) (Table 4), built from a search's settings.

LAT(alpha) samples the cells the LPM reads: the normal cell (the paper's 112-bit LPM, alpha_normal) or
both cells (a 224-bit LPM: alpha_normal and alpha_reduce, so the reduction cell is constrained too).

Both costs count in units of the reference network DARTS_V2 on the same target: LAT(alpha) is divided
by the LPM's prediction for DARTS_V2 (ms, its cells encoded as the LPM reads them), FLOPs(alpha) by
DARTS_V2's MACs. lambda_ (and eta) is thus a loss per reference latency (MACs), the same on a 2 ms
GPU and a 20 ms CPU target. Measured (normal-cell LPM): per millisecond (on the ~19 ms CPU target),
lambda_ = 0.1 already turned every normal-cell edge into skip_connect, which the paper sees only
above 0.2. An LPM with lambda_ = 0 still estimates LAT(alpha) every step (logged), and its term
adds exactly zero: the search is the plain one bit for bit.

A prediction and a measurement are made on two machines that may differ 2x in speed: every report sets
each beside DARTS_V2 on its own device (predicted: LPM(genotype) / LPM(DARTS_V2); measured: latency /
DARTS_V2 timed alongside) and gives milliseconds only with the device they were made on (comparison_text).

A latency error model (cost/errors.py) replaces the LPM in what the search *optimises* (LAT(alpha),
the unit, the target mode), never in what it *reports*: the derived network's predicted latency is the
true LPM's, beside the perturbed one's and the error's measured size (MRE, Kendall tau).
"""
import numpy as np
import tensorflow as tf

from ladnas_tf import architect, genotypes
from ladnas_tf.bad_input import BadInput
from ladnas_tf.cost import errors, flops, latency
from ladnas_tf.graph.setting import Setting
from ladnas_tf.lpm.dataset import genotype_encoding
from ladnas_tf.profiling.targets.base import numeric_format


REFERENCE = genotypes.DARTS_V2  # the unit of both costs (and the profiler's reference network)


class ObjectiveError(BadInput):
    """Settings of the latency or FLOPs term that cannot work together; one line."""


def check(lambda_, eta, predictor, target_latency_ms, lat_samples, error=errors.Spec()):
    """predictor: the LPM or its name / directory (only whether there is one counts here)."""
    if lambda_ < 0 or eta < 0:
        raise ObjectiveError(f'lambda_ and eta must not be negative, got {lambda_} and {eta}')
    if eta and (lambda_ or target_latency_ms is not None):
        raise ObjectiveError('the latency term (lambda_ / target_latency_ms) and the FLOPs term (eta) '
                             'cannot be active together')
    if (lambda_ or target_latency_ms is not None) and not predictor:
        raise ObjectiveError('a latency-aware search needs an LPM (lpm_dir)')
    if target_latency_ms is not None and target_latency_ms <= 0:
        raise ObjectiveError(f'target_latency_ms must be positive, got {target_latency_ms}')
    if lat_samples < 1:
        raise ObjectiveError(f'lat_samples (M) must be at least 1, got {lat_samples}')
    try:
        error.check()
    except errors.ErrorModelError as e:
        raise ObjectiveError(str(e)) from None
    if error.kind != 'none' and not predictor:
        raise ObjectiveError(f'a latency error ({error.kind}) perturbs an LPM: it needs lpm_dir and no eta')


class Objective:
    """The ArchLoss of a search plus what its terms need checkpointed, logged and reported.

    predictor: the LPM the latency term reads (lpm.registry.load); worse_predictor: the worse LPM of
    error kind `predictor`. Build it inside the search's strategy scope: the term's state (lambda_ under
    dual ascent, the sample counter) is then one value for all replicas, written by the first."""

    def __init__(self, lambda_=0.0, eta=0.0, predictor=None, target_latency_ms=None, lat_samples=20,
                 error=errors.Spec(), seed=0, eval_setting=None, worse_predictor=None, eval_target=None):
        check(lambda_, eta, predictor, target_latency_ms, lat_samples, error)
        if error.kind != 'none' and eta:
            raise ObjectiveError(f'a latency error ({error.kind}) perturbs the latency term, not the FLOPs term')
        self.lpm = predictor if not eta else None
        if self.lpm is not None and self.lpm.cells not in latency.SAMPLED_CELLS:
            raise ObjectiveError(f'{self.lpm.path}: LAT(alpha) samples {" or ".join(latency.SAMPLED_CELLS)} '
                                 f'cells; this LPM reads {self.lpm.cells!r} encodings')
        # The network whose latency / MACs count: the LPM's own setting, else the paper's CIFAR network.
        self.setting = (Setting.from_key(self.lpm.metadata['setting']) if self.lpm is not None
                        else eval_setting or Setting())
        self.eval_target = eval_target or {'target': 'cpu_tflite'}  # without an LPM: where it is timed
        self.arch_loss = architect.ArchLoss()
        self.latency = self.flops = None
        self.error = None
        if self.lpm is not None:
            self.error = self._error_model(error, seed, worse_predictor)
            self.reference_ms = self.predicted_ms(REFERENCE)
            self.searched_reference_ms = self.searched_ms(REFERENCE)  # the unit the search divides by
            self.latency = latency.LatencyTerm(self.lpm, lambda_, lat_samples, seed, self.error, target_latency_ms,
                                               scale_ms=self.searched_reference_ms, cells=self.lpm.cells)
            self.arch_loss.add_term('latency', self.latency)
        elif eta:
            tables = flops.macs_table(self.setting.channels, self.setting.image_size, self.setting.num_cells)
            self.flops = flops.FlopsTerm(eta, tables, scale=flops.genotype_macs(REFERENCE, tables))
            self.arch_loss.add_term('flops', self.flops)

    def _error_model(self, spec, seed, worse):
        """The ErrorModel of spec around this LPM (None: exact); the worse LPM (loaded for this one's
        target and setting: lpm.registry.load) must read the same cells."""
        if spec.kind == 'none':
            return None
        if spec.kind == 'predictor':
            if worse is not None and worse.cells != self.lpm.cells:
                raise ObjectiveError(f'{spec.lpm_dir}: the worse LPM reads {worse.cells!r} cells, the true '
                                     f'one {self.lpm.cells!r}')
        return errors.ErrorModel(spec, self.lpm.input_size, seed, worse)

    def searched_ms(self, genotype):
        """What the search believes a discrete genotype's latency is: the error model's deterministic
        part (systematic, predictor; the true LPM for the noise models)."""
        if self.error is None:
            return self.predicted_ms(genotype)
        code = tf.constant(genotype_encoding(genotype, self.lpm.cells)[None])
        return float(np.asarray(self.error.static(self.lpm, code))[0])

    def predicted_ms(self, genotype):
        """The LPM's latency (ms) for a discrete genotype, the cells it reads encoded."""
        return float(self.lpm.predict_genotypes([genotype])[0])

    def variables(self):
        return self.latency.variables() if self.latency is not None else {}

    def scalars(self):
        """TensorBoard scalars after an architecture step: LAT(alpha) (ms) and lambda_."""
        if self.latency is None:
            return {}
        out = {'arch/lat_alpha_ms': float(self.latency.last_ms.numpy()),
               'arch/lambda': float(self.latency.lambda_.numpy())}
        if self.latency.target_ms is not None:  # what the dual ascent steers (see loss.LatencyTerm)
            out['arch/derived_ms'] = float(self.latency.derived_ms.numpy())
        return out

    def report(self, genotype):
        """The derived genotype's predicted latency (LPM, the cells it reads) in the evaluation network,
        the target it would be timed on (the FLOPs baseline: cpu_tflite), and the term's final state."""
        out = {'setting': self.setting.key, 'target': self.target_description()['target']}
        if self.latency is not None:
            predicted = self.predicted_ms(genotype)
            out.update({'lambda_': float(self.latency.lambda_.numpy()), 'unit_ms': self.reference_ms,
                        'lat_alpha_ms': float(self.latency.last_ms.numpy()), 'predicted_ms': predicted,
                        'predicted_vs_reference': predicted / self.reference_ms,
                        'predicted_on': device_name(self.lpm.target_description)})
            if self.error is not None:
                spec = self.error.spec
                out['latency_error'] = {'kind': spec.kind, 'size': spec.size, 'lpm_dir': spec.lpm_dir,
                                        'systematic_scale': self.error.scale,
                                        'searched_unit_ms': self.searched_reference_ms,
                                        'searched_predicted_ms': self.searched_ms(genotype),
                                        **self.error.fidelity(self.lpm)}
        elif self.flops is not None:
            out.update({'eta': self.flops.eta, 'unit_mmacs': self.flops.scale})
        else:
            return {}
        return out

    def target_description(self):
        """What the derived network is timed on: the LPM's device (a board's LPM times on that board;
        without an LPM, eval_target: the CPU)."""
        return self.lpm.target_description if self.lpm is not None else self.eval_target


# ---- a prediction beside a measurement ----

def device_name(description):
    """'AMD EPYC [cpu_tflite, float32, 1 thread]': the machine and the way a figure was made on it, from a
    target's description (a predictor's metadata, or Target.describe() of the measuring machine)."""
    threads = description.get('threads')
    how = [description.get('target') or 'unknown target', numeric_format(description)]
    how += [f'{threads} thread{"" if threads == 1 else "s"}'] if threads else []
    return f'{description.get("device") or "an unrecorded device"} [{", ".join(how)}]'


def measured_report(measured, description):
    """A network timed as a table row (profiler.measure_genotype) as the reports give it: its multiple of
    DARTS_V2 timed alongside (the figure a loaded or faster machine does not move), the milliseconds with
    the machine (description: Target.describe()) they were measured on."""
    return {'measured_ms': measured['latency_ms'], 'measured_cv': measured['cv'], 'reference_ms': measured['ref_ms'],
            'measured_vs_reference': measured['latency_ms'] / measured['ref_ms'],
            'measured_on': device_name(description), 'params': measured['params'], 'macs': measured['macs']}


def comparison_text(report):
    """'predicted 0.71x DARTS_V2 on AMD EPYC [cpu_tflite, float32, 1 thread] (13.43 vs 18.92 ms there);
    measured 0.73x DARTS_V2 on ... (5.49 vs 7.52 ms there)': a report's prediction and measurement
    (whichever it has), each a multiple of DARTS_V2 on its own device; '' when it has neither."""
    parts = [relative_text(what, report.get(f'{what}_ms'), report.get(reference), report.get(f'{what}_on'))
             for what, reference in (('predicted', 'unit_ms'), ('measured', 'reference_ms'))]
    return '; '.join(p for p in parts if p)


def relative_text(what, ms, reference_ms, device):
    """'measured 0.73x DARTS_V2 on <device> (5.49 vs 7.52 ms there)', or '' without the figures."""
    if ms is None or not reference_ms:
        return ''
    return (f'{what} {ms / reference_ms:.2f}x DARTS_V2 on {device or "an unnamed device"} '
            f'({_ms(ms)} vs {_ms(reference_ms)} ms there)')


def _ms(value):
    return f'{value:.2f}' if value >= 1 else f'{value:.3g}'  # a tiny network's file takes hundredths
