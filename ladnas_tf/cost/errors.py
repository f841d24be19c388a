"""Error models of the latency predictor: how wrong LAT(alpha) may be, and what that does to a search.

The search's objective reads a *perturbed* predictor; what a search reports (the derived network's
predicted latency) reads the true one. Four kinds of error, each of a chosen size:

* `additive` (size: sigma in ms): N(0, sigma) added to LAT(alpha) once per step, the paper's Table 3.
  A number that does not depend on alpha: d LAT / d alpha, hence the search, is unchanged.
* `multiplicative` (size: sigma, relative): each sampled sub-network's prediction times (1 + e),
  e ~ N(0, sigma), fresh per sample and per step: zero-mean noise that reaches the gradient.
* `systematic` (size: the MRE against the true predictor, e.g. 0.1 = 10%): a fixed, deterministic,
  architecture-dependent error, prediction x exp(s * z(x)), z a second, independently initialised
  MLP of the encoding standardised over random architectures, s calibrated so that the mean relative
  error on random architectures is the requested one. Smooth in the encoding, so it bends the
  gradient as a predictor's own errors do; the exponential keeps every prediction positive.
* `predictor` (size unused): another trained LPM (e.g. one fitted on 100 rows) in place of the true
  one: the errors real predictors make.

`fidelity` measures any of them against the true predictor on uniformly random architectures (MRE,
Kendall tau): the x-axis of an error sweep.
"""
import dataclasses
import math

import numpy as np
import tensorflow as tf
from scipy import stats

from ladnas_tf import search_space
from ladnas_tf.bad_input import BadInput

KINDS = ('none', 'additive', 'multiplicative', 'systematic', 'predictor')
CALIBRATION_ARCHS = 4096   # random architectures that standardise z and calibrate s
_HIDDEN = 64


class ErrorModelError(BadInput):
    """An error model that cannot be built as asked; one line."""


def check(kind, size, lpm_dir=None):
    """Refuses a kind/size/lpm_dir combination that cannot work, before anything is built or written."""
    if kind not in KINDS:
        raise ErrorModelError(f'unknown latency error model {kind!r} (known: {", ".join(KINDS)})')
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not math.isfinite(size) or size < 0:
        raise ErrorModelError(f'latency error size must be a finite number >= 0, got {size!r}')
    if kind in ('additive', 'multiplicative', 'systematic') and size == 0:
        raise ErrorModelError(f'a {kind} latency error needs a size > 0 (or latency_error none)')
    if kind in ('none', 'predictor') and size:
        raise ErrorModelError(f'latency error {kind!r} takes no size, got {size}')
    if (kind == 'predictor') != bool(lpm_dir):
        raise ErrorModelError('latency error predictor needs the worse LPM (latency_error_lpm), '
                              'and only it takes one')


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a search is told about its predictor's error."""
    kind: str = 'none'
    size: float = 0.0
    lpm_dir: str = None

    def check(self):
        check(self.kind, self.size, self.lpm_dir)

    @property
    def name(self):
        """A short, path-safe label (sweep run names)."""
        if self.kind == 'none':
            return 'exact'
        if self.kind == 'predictor':
            return 'predictor_' + ''.join(c if c.isalnum() else '_' for c in self.lpm_dir.rstrip('/').split('/')[-1])
        return f'{self.kind}_{self.size:g}'


def parse(text):
    """'none', 'multiplicative:0.2', 'systematic:0.1', 'predictor:<dir>' -> Spec (checked)."""
    kind, _, arg = text.strip().partition(':')
    if kind == 'predictor':
        spec = Spec(kind, 0.0, arg or None)
    else:
        try:
            spec = Spec(kind, float(arg) if arg else 0.0)
        except ValueError:
            raise ErrorModelError(f'latency error {text!r}: the size after ":" must be a number') from None
    spec.check()
    return spec


def uniform_encodings(n, cells, seed):
    """[n, 112 * cells] encodings of uniformly random architectures (search_space.sample_genotype)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, search_space.ENCODING_SIZE * cells), np.float32)
    for i in range(n):
        g = search_space.sample_genotype(rng)
        out[i] = np.concatenate([search_space.encode_cell(c) for c in (g.normal, g.reduce)[:cells]])
    return out


class ErrorModel:
    """The error applied to a predictor f (encodings [n, d] -> ms [n]) in the search's objective.

    `per_sample(f, x, seed)` is f(x) with the error of each sampled sub-network (seed: the step's
    stateless seed [2]); `on_mean(lat, seed)` is the error on LAT(alpha) itself (additive only);
    `static(f, x)` is the deterministic part (systematic, predictor; f otherwise): what the search's
    unit (DARTS_V2's prediction) and the target mode read. `other_fn`: the worse LPM (predictor)."""

    def __init__(self, spec, input_size, seed=0, other_fn=None):
        spec.check()
        self.spec, self.input_size, self.other_fn, self.scale = spec, input_size, other_fn, 0.0
        if spec.kind == 'predictor' and other_fn is None:
            raise ErrorModelError('latency error predictor: the worse LPM was not loaded')
        if spec.kind == 'systematic':
            self._build_systematic(seed)

    @property
    def cells(self):
        return self.input_size // search_space.ENCODING_SIZE

    # -- the systematic error: a random smooth function of the encoding, calibrated --
    def _build_systematic(self, seed):
        rng = np.random.default_rng([seed, 0x5E7])
        # Pre-activations spread over sigmoid's slope, not saturated: z varies with every bit.
        w1 = rng.normal(0, 4 * math.sqrt(2.0 / (self.input_size + _HIDDEN)), (self.input_size, _HIDDEN))
        b1, w2 = rng.normal(0, 1, _HIDDEN), rng.normal(0, 1, _HIDDEN)
        self._w1, self._b1, self._w2 = (tf.constant(a, tf.float32) for a in (w1, b1, w2))
        raw = self._raw(uniform_encodings(CALIBRATION_ARCHS, self.cells, [seed, 1])).numpy()
        self._mu, self._sd = float(raw.mean()), float(raw.std()) or 1.0
        self.scale = _calibrate((raw - self._mu) / self._sd, self.spec.size)

    def _raw(self, x):
        h = tf.sigmoid(tf.matmul(tf.cast(x, tf.float32), self._w1) + self._b1)
        return tf.linalg.matvec(h, self._w2)

    def _factor(self, x):
        """exp(s * z(x)): the systematic error as a factor on the prediction."""
        return tf.exp(self.scale * (self._raw(x) - self._mu) / self._sd)

    # -- what the search reads --
    def static(self, f, x):
        kind = self.spec.kind
        if kind == 'systematic':
            y = f(x)
            return y * tf.cast(self._factor(x), y.dtype)
        if kind == 'predictor':
            return tf.cast(self.other_fn(x), x.dtype)
        return f(x)

    def per_sample(self, f, x, seed):
        y = self.static(f, x)
        if self.spec.kind == 'multiplicative':  # fresh e per sample (row) and per step (seed)
            e = tf.random.stateless_normal(tf.shape(y), tf.convert_to_tensor(seed, tf.int64) + [0, 11],
                                           stddev=self.spec.size, dtype=y.dtype)
            y = y * (1.0 + e)
        return y

    def on_mean(self, lat, seed):
        if self.spec.kind == 'additive':
            lat += tf.random.stateless_normal((), tf.convert_to_tensor(seed, tf.int64) + [0, 7],
                                              stddev=self.spec.size, dtype=lat.dtype)
        return lat

    def fidelity(self, f, n=2000, seed=12345):
        """MRE and Kendall tau of (one draw of) the perturbed predictor against f on n uniformly
        random architectures (additive: the noise as if added to each architecture's prediction)."""
        x = tf.constant(uniform_encodings(n, self.cells, [seed, 2]))
        true = np.asarray(f(x), np.float64)
        draw = np.asarray(self.per_sample(f, x, [seed, 0]), np.float64)
        if self.spec.kind == 'additive':
            draw = draw + np.random.default_rng(seed).normal(0, self.spec.size, n)
        return {'mre': float(np.mean(np.abs(draw - true) / true)),
                'kendall_tau': float(stats.kendalltau(true, draw)[0]), 'archs': n}


def _calibrate(z, mre):
    """s such that mean |exp(s z) - 1| = mre over z (monotone in s >= 0: bisection)."""
    lo, hi = 0.0, 1.0
    while np.mean(np.abs(np.expm1(hi * z))) < mre:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(np.abs(np.expm1(mid * z))) < mre else (lo, mid)
    return (lo + hi) / 2
