"""The DARTS search space (paper section 3): primitives, edges, genotypes, the 112-bit encoding.

A cell has 2 input nodes (0, 1) and 4 intermediate nodes (2..5). Intermediate node j may take any
earlier node as input, which gives 2 + 3 + 4 + 5 = 14 edges. A *genotype* keeps exactly 2 distinct
input edges per intermediate node with one non-`none` op on each (DARTS's discrete cell).
"""
import ast
import hashlib
import itertools
import json
import math
from typing import NamedTuple

import numpy as np

from ladnas_tf.bad_input import BadInput

PRIMITIVES = (
    'none',
    'max_pool_3x3',
    'avg_pool_3x3',
    'skip_connect',
    'sep_conv_3x3',
    'sep_conv_5x5',
    'dil_conv_3x3',
    'dil_conv_5x5',
)
NUM_OPS = len(PRIMITIVES)
CANDIDATE_OPS = PRIMITIVES[1:]  # what a discrete cell may hold: everything but `none`
NUM_INPUTS = 2                  # input nodes of a cell
NUM_NODES = 4                   # intermediate nodes of a cell
INPUTS_PER_NODE = 2
CONCAT = tuple(range(NUM_INPUTS, NUM_INPUTS + NUM_NODES))
# DARTS edge order: node by node, and within a node by input index.
EDGES = tuple((i, j) for j in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES) for i in range(j))
NUM_EDGES = len(EDGES)
ENCODING_SIZE = NUM_EDGES * NUM_OPS  # the paper's 112 bits


class GenotypeError(BadInput):
    """A genotype, cell or encoding that is not a member of the search space."""


def edge_index(i, j):
    """Position of edge (i -> j) in EDGES."""
    return EDGES.index((i, j))


class Genotype(NamedTuple):
    """DARTS's genotype: per cell 8 (op, input) pairs, two per intermediate node, in node order."""
    normal: tuple
    normal_concat: tuple
    reduce: tuple
    reduce_concat: tuple

    def __str__(self):
        """DARTS's printed form, which DARTS's own `eval` and our `from_darts_str` both read."""
        cell = lambda c: '[' + ', '.join(f"('{op}', {i})" for op, i in c) + ']'
        return (f'Genotype(normal={cell(self.normal)}, normal_concat={list(self.normal_concat)}, '
                f'reduce={cell(self.reduce)}, reduce_concat={list(self.reduce_concat)})')

    def to_json(self):
        return json.dumps({'normal': [list(e) for e in self.normal],
                           'normal_concat': list(self.normal_concat),
                           'reduce': [list(e) for e in self.reduce],
                           'reduce_concat': list(self.reduce_concat)})


def make_genotype(normal, reduce, normal_concat=CONCAT, reduce_concat=CONCAT):
    """Builds and validates a Genotype from any sequences of (op, input) pairs."""
    for name, cell in (('normal', normal), ('reduce', reduce)):
        if not isinstance(cell, (list, tuple)):
            raise GenotypeError(f'{name}: expected a list of (op, input) pairs, got {cell!r}')
        validate_cell(cell, name)
    for name, concat in (('normal_concat', normal_concat), ('reduce_concat', reduce_concat)):
        if not isinstance(concat, (list, tuple, range)):
            raise GenotypeError(f'{name} must be {list(CONCAT)}, got {concat!r}')
    as_tuples = lambda c: tuple((op, i) for op, i in c)
    g = Genotype(as_tuples(normal), tuple(normal_concat), as_tuples(reduce), tuple(reduce_concat))
    validate(g)
    return g


def validate_cell(cell, name='cell'):
    """Raises GenotypeError naming the first way `cell` leaves the search space."""
    if len(cell) != NUM_NODES * INPUTS_PER_NODE:
        raise GenotypeError(f'{name}: expected {NUM_NODES * INPUTS_PER_NODE} edges, got {len(cell)}')
    for k, entry in enumerate(cell):
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
            raise GenotypeError(f'{name}[{k}]: expected an (op, input) pair, got {entry!r}')
        op, i = entry
        node = NUM_INPUTS + k // INPUTS_PER_NODE
        if op == 'none':
            raise GenotypeError(f"{name}[{k}]: op 'none' is not allowed in a discrete cell")
        if op not in PRIMITIVES:
            raise GenotypeError(f'{name}[{k}]: unknown op {op!r} (known: {", ".join(CANDIDATE_OPS)})')
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < node:
            raise GenotypeError(f'{name}[{k}]: input {i!r} of node {node} is out of range 0..{node - 1}')
    for node in range(NUM_NODES):
        a, b = (cell[INPUTS_PER_NODE * node + t][1] for t in range(INPUTS_PER_NODE))
        if a == b:
            raise GenotypeError(f'{name}: node {node + NUM_INPUTS} takes input {a} twice')


def validate(genotype):
    for field in ('normal', 'reduce'):
        validate_cell(getattr(genotype, field), field)
        concat = tuple(getattr(genotype, field + '_concat'))
        if concat != CONCAT:
            raise GenotypeError(f'{field}_concat must be {list(CONCAT)}, got {list(concat)}')


# A genotype is ~600 characters; anything far larger is not one, and bounding the text bounds the
# parsers' recursion and memory (a JSON nested thousands deep, `range(2, 10**12)`).
MAX_TEXT = 65536


def _bounded(text):
    if not isinstance(text, str):
        raise GenotypeError(f'genotype must be text, got {type(text).__name__}')
    if len(text) > MAX_TEXT:
        raise GenotypeError(f'genotype text of {len(text)} characters is not a genotype (at most {MAX_TEXT})')
    return text


def from_json(text):
    """Genotype from `Genotype.to_json` text; raises GenotypeError on anything malformed."""
    try:
        d = json.loads(_bounded(text))
    except json.JSONDecodeError as e:
        raise GenotypeError(f'malformed genotype JSON: {e}') from None
    except RecursionError:
        raise GenotypeError('malformed genotype JSON: nested too deeply') from None
    if not isinstance(d, dict):
        raise GenotypeError('genotype JSON must be an object')
    missing = [f for f in Genotype._fields if f not in d]
    if missing:
        raise GenotypeError(f'genotype JSON lacks field(s): {", ".join(missing)}')
    return make_genotype(d['normal'], d['reduce'], d['normal_concat'], d['reduce_concat'])


def _literal(name, node):
    """A field of DARTS's printed form: a literal, or DARTS's range(2, 6) for the concat fields."""
    if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'range':
        args = [_literal(name, a) for a in node.args]
        if not (1 <= len(args) <= 3 and all(type(a) is int and abs(a) <= 64 for a in args)):
            raise GenotypeError(f'genotype field {name}: range{tuple(args)} is not a concat of node indices')
        return list(range(*args))
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise GenotypeError(f'genotype field {name} is not a literal') from None


def from_darts_str(text):
    """Genotype from DARTS's printed form, e.g. `Genotype(normal=[('sep_conv_3x3', 0), ...], ...)`."""
    try:
        call = ast.parse(_bounded(text).strip(), mode='eval').body
    except SyntaxError as e:
        raise GenotypeError(f'malformed genotype text: {e.msg}') from None
    except (RecursionError, MemoryError, ValueError):
        raise GenotypeError('malformed genotype text: nested too deeply or not text') from None
    if not (isinstance(call, ast.Call) and getattr(call.func, 'id', None) == 'Genotype'):
        raise GenotypeError('genotype text must be a call Genotype(...)')
    fields = {kw.arg: _literal(kw.arg, kw.value) for kw in call.keywords}
    try:
        return from_json(json.dumps(fields))
    except (TypeError, ValueError) as e:  # a literal JSON cannot hold (a set, bytes, a complex number)
        if isinstance(e, GenotypeError):
            raise
        raise GenotypeError(f'genotype text holds a value that is not a list of (op, input) pairs ({e})') from None


def parse(text):
    """A genotype from JSON or DARTS text."""
    text = _bounded(text).strip()
    return from_json(text) if text.startswith('{') else from_darts_str(text)


# ---- the paper's 112-bit encoding (section 3.2) ----

def encode_cell(cell):
    """112-bit vector (14 edges x 8 ops, row-major) of a discrete cell: exactly 8 ones."""
    validate_cell(cell)
    bits = np.zeros((NUM_EDGES, NUM_OPS), np.float32)
    for k, (op, i) in enumerate(cell):
        bits[edge_index(i, NUM_INPUTS + k // INPUTS_PER_NODE), PRIMITIVES.index(op)] = 1.0
    return bits.reshape(-1)


def decode_cell(bits):
    """Inverse of encode_cell. The encoding has no order within a node, so pairs come out by input."""
    bits = np.asarray(bits).reshape(NUM_EDGES, NUM_OPS)
    if not np.isin(bits, (0, 1)).all() or bits.sum() != NUM_NODES * INPUTS_PER_NODE:
        raise GenotypeError(f'an encoding has {NUM_NODES * INPUTS_PER_NODE} ones and only 0/1 bits')
    if (bits.sum(axis=1) > 1).any():
        raise GenotypeError('an encoding has at most one op per edge')
    for j in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
        kept = int(bits[[edge_index(i, j) for i in range(j)]].sum())
        if kept != INPUTS_PER_NODE:
            raise GenotypeError(f'an encoding keeps {kept} input edges of node {j}, not {INPUTS_PER_NODE}')
    cell = []
    for e in np.flatnonzero(bits.sum(axis=1)):
        i, j = EDGES[e]
        cell.append((j, i, PRIMITIVES[int(np.argmax(bits[e]))]))
    cell = tuple((op, i) for _, i, op in sorted(cell))
    validate_cell(cell)
    return cell


def canonical_cell(cell):
    """The cell with each node's pair ordered by input index: what decode_cell(encode_cell(c)) gives."""
    pairs = [sorted(cell[k:k + INPUTS_PER_NODE], key=lambda e: e[1])
             for k in range(0, len(cell), INPUTS_PER_NODE)]
    return tuple(tuple(e) for pair in pairs for e in pair)


# ---- uniform sampling of sub-networks, and the size of the space it draws from ----

def node_input_choices(node):
    """All input pairs a sampled intermediate node (0-based among the 4) may take."""
    return tuple(itertools.combinations(range(NUM_INPUTS + node), INPUTS_PER_NODE))


def num_cells():
    """Distinct discrete cells the sampler can produce: the product over nodes of its choices."""
    return math.prod(len(node_input_choices(n)) * len(CANDIDATE_OPS) ** INPUTS_PER_NODE
                     for n in range(NUM_NODES))


def sample_cell(rng):
    """A uniformly random discrete cell (canonical order): uniform input pair, uniform ops."""
    cell = []
    for node in range(NUM_NODES):
        choices = node_input_choices(node)
        pair = choices[rng.integers(len(choices))]
        cell += [(CANDIDATE_OPS[rng.integers(len(CANDIDATE_OPS))], int(i)) for i in pair]
    return tuple(cell)


def sample_genotype(rng):
    """A random genotype: normal and reduction cells drawn independently."""
    return Genotype(sample_cell(rng), CONCAT, sample_cell(rng), CONCAT)


def genotype_id(genotype):
    """A stable short id of a genotype's canonical form (same cells -> same id)."""
    key = json.dumps([canonical_cell(genotype.normal), canonical_cell(genotype.reduce)])
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def signature():
    """What an LPM must have been trained on to be used with this space: ops, edges and encoding."""
    return {'primitives': list(PRIMITIVES), 'edges': [list(e) for e in EDGES],
            'encoding': f'normal-cell {NUM_EDGES}x{NUM_OPS} one-hot, edge-major'}
