"""The search space: genotype formats, the 112-bit encoding, the sampler and the size of its space."""
import collections
import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from ladnas_tf import genotypes, search_space as ss

ROUND_TRIPS = 500


def shuffled(cell, rng):
    """The same cell with each node's two pairs in random order: a non-canonical spelling."""
    out = []
    for k in range(0, len(cell), 2):
        pair = list(cell[k:k + 2])
        rng.shuffle(pair)
        out += pair
    return tuple(out)


@pytest.fixture(scope='module')
def random_genotypes():
    rng = np.random.default_rng(0)
    return [ss.make_genotype(shuffled(g.normal, rng), shuffled(g.reduce, rng))
            for g in (ss.sample_genotype(rng) for _ in range(ROUND_TRIPS))]


def test_json_round_trip_is_lossless_and_keeps_order(random_genotypes):
    for g in random_genotypes:
        back = ss.parse(g.to_json())
        assert back == g and back.normal == g.normal and back.reduce == g.reduce


def test_darts_text_round_trip_is_lossless_and_keeps_order(random_genotypes):
    for g in random_genotypes:
        assert ss.parse(str(g)) == g


def test_round_trips_kept_non_canonical_orders(random_genotypes):
    # Otherwise the order tests above would prove nothing.
    assert any(ss.canonical_cell(g.normal) != g.normal for g in random_genotypes)


def test_encoding_round_trip(random_genotypes):
    for g in random_genotypes:
        for cell in (g.normal, g.reduce):
            bits = ss.encode_cell(cell)
            assert bits.shape == (ss.ENCODING_SIZE,) == (112,)
            assert set(np.unique(bits)) <= {0.0, 1.0} and bits.sum() == 8
            assert ss.decode_cell(bits) == ss.canonical_cell(cell)


def test_encoding_places_ops_on_their_edges():
    bits = ss.encode_cell(genotypes.DARTS_V2.normal).reshape(ss.NUM_EDGES, ss.NUM_OPS)
    # DARTS_V2's last node takes ('dil_conv_3x3', 2): edge 2 -> 5.
    assert bits[ss.edge_index(2, 5), ss.PRIMITIVES.index('dil_conv_3x3')] == 1
    assert bits[:, ss.PRIMITIVES.index('none')].sum() == 0


def test_genotype_id_ignores_order_within_a_node(random_genotypes):
    g = random_genotypes[0]
    canonical = ss.make_genotype(ss.canonical_cell(g.normal), ss.canonical_cell(g.reduce))
    assert ss.genotype_id(g) == ss.genotype_id(canonical)
    assert len({ss.genotype_id(g) for g in random_genotypes}) == len(random_genotypes)


# ---- the size of the space: 1,037,664,180 cells ----

def all_input_structures():
    """Brute force, independent of the sampler: every set of 8 of the 14 edges that gives each
    intermediate node exactly two inputs, as the inputs in canonical (node, input) order."""
    return [tuple(i for i, _ in chosen) for chosen in itertools.combinations(ss.EDGES, 8)
            if all(sum(j == node for _, j in chosen) == 2 for node in range(2, 6))]


def test_num_cells_is_the_product_of_the_samplers_choices():
    per_node = [len(ss.node_input_choices(n)) * 7 ** 2 for n in range(ss.NUM_NODES)]
    assert [len(ss.node_input_choices(n)) for n in range(4)] == [1, 3, 6, 10]
    assert ss.num_cells() == math.prod(per_node) == 1_037_664_180


def test_num_cells_by_brute_force():
    structures = all_input_structures()
    assert len(structures) == len(set(structures)) == 180
    assert len(structures) * len(ss.CANDIDATE_OPS) ** 8 == ss.num_cells()


def test_sampler_draws_exactly_the_brute_force_space():
    structures = set(all_input_structures())
    rng = np.random.default_rng(1)
    seen, ops = set(), collections.Counter()
    for _ in range(5000):
        cell = ss.sample_cell(rng)
        ss.validate_cell(cell)
        assert cell == ss.canonical_cell(cell)
        seen.add(tuple(i for _, i in cell))
        ops.update(op for op, _ in cell)
    assert seen == structures            # only members, and every one of them
    assert set(ops) == set(ss.CANDIDATE_OPS)


def test_sampler_is_roughly_uniform():
    rng = np.random.default_rng(2)
    cells = [ss.sample_cell(rng) for _ in range(6000)]
    # Ops: uniform over the 7 candidates on every one of the 8 slots.
    for k in range(8):
        counts = collections.Counter(c[k][0] for c in cells)
        assert stats.chisquare([counts[op] for op in ss.CANDIDATE_OPS]).pvalue > 1e-3
    # Input pairs: uniform over each node's choices (the last node has 10).
    for node in range(1, ss.NUM_NODES):
        counts = collections.Counter((c[2 * node][1], c[2 * node + 1][1]) for c in cells)
        choices = ss.node_input_choices(node)
        assert stats.chisquare([counts[p] for p in choices]).pvalue > 1e-3


def test_sampled_genotypes_draw_both_cells_independently():
    rng = np.random.default_rng(3)
    gs = [ss.sample_genotype(rng) for _ in range(200)]
    for g in gs:
        ss.validate(g)
    assert sum(g.normal == g.reduce for g in gs) == 0


# ---- validation: every way out of the space is a GenotypeError that names it ----

V2 = json.loads(genotypes.DARTS_V2.to_json())


def with_normal(**changes):
    d = json.loads(json.dumps(V2))
    for k, entry in changes.items():
        d['normal'][int(k[1:])] = entry
    return json.dumps(d)


BAD = {
    'malformed JSON': ('{"normal": [', r'malformed genotype JSON'),
    'missing field': (json.dumps({'normal': V2['normal']}), r'lacks field\(s\): normal_concat'),
    'unknown op': (with_normal(e3=['conv_7x7', 1]), r"normal\[3\]: unknown op 'conv_7x7'"),
    'node index out of range': (with_normal(e7=['sep_conv_3x3', 5]),
                                r'normal\[7\]: input 5 of node 5 is out of range 0..4'),
    'negative index': (with_normal(e0=['sep_conv_3x3', -1]), r'input -1 of node 2 is out of range'),
    'none op': (with_normal(e2=['none', 0]), r"normal\[2\]: op 'none' is not allowed"),
    'too few edges': (json.dumps({**V2, 'reduce': V2['reduce'][:6]}), r'reduce: expected 8 edges, got 6'),
    'too many edges': (json.dumps({**V2, 'normal': V2['normal'] + [['skip_connect', 0]]}),
                       r'normal: expected 8 edges, got 9'),
    'repeated input': (with_normal(e1=['sep_conv_3x3', 0]), r'normal: node 2 takes input 0 twice'),
    'wrong concat': (json.dumps({**V2, 'reduce_concat': [2, 3, 4]}),
                     r'reduce_concat must be \[2, 3, 4, 5\], got \[2, 3, 4\]'),
    'DARTS text syntax': ("Genotype(normal=[('sep_conv_3x3', 0)", r'malformed genotype text'),
    'DARTS text not a call': ("dict(normal=[])", r'must be a call Genotype'),
    'DARTS text not literal': ('Genotype(normal=foo, normal_concat=[2, 3, 4, 5], reduce=[], '
                               'reduce_concat=[2, 3, 4, 5])', r'field normal is not a literal'),
}


@pytest.mark.parametrize('problem', list(BAD))
def test_bad_genotypes_raise_a_one_line_error_naming_the_problem(problem):
    text, message = BAD[problem]
    with pytest.raises(ss.GenotypeError, match=message) as info:
        ss.parse(text)
    assert isinstance(info.value, ValueError) and '\n' not in str(info.value)


def test_json_that_is_not_an_object():
    with pytest.raises(ss.GenotypeError, match='must be an object'):
        ss.from_json('[1, 2]')


@pytest.mark.parametrize('cell', [[['sep_conv_3x3']] * 8, 5, [5] * 8])
def test_cells_that_are_not_lists_of_pairs(cell):
    with pytest.raises(ss.GenotypeError, match=r'normal'):
        ss.parse(json.dumps({**V2, 'normal': cell}))


def test_the_same_errors_from_darts_text():
    bad = str(genotypes.DARTS_V2).replace("('dil_conv_3x3', 2)", "('none', 2)")
    with pytest.raises(ss.GenotypeError, match="'none' is not allowed"):
        ss.parse(bad)


@pytest.mark.parametrize('bits, message', [
    (np.zeros(112), r'8 ones'),
    (np.full(112, 0.5), r'only 0/1 bits'),
    (np.r_[np.ones(8), np.zeros(104)], r'at most one op per edge'),   # all 8 ops on edge 0
])
def test_bad_encodings(bits, message):
    with pytest.raises(ss.GenotypeError, match=message):
        ss.decode_cell(bits)


def test_decode_accepts_exactly_the_encodings_of_the_space():
    structures = set(all_input_structures())
    accepted = set()
    for chosen in itertools.combinations(range(ss.NUM_EDGES), 8):
        bits = np.zeros((ss.NUM_EDGES, ss.NUM_OPS), np.float32)
        bits[list(chosen), ss.PRIMITIVES.index('skip_connect')] = 1
        try:
            accepted.add(tuple(i for _, i in ss.decode_cell(bits)))
        except ss.GenotypeError as e:
            assert 'node' in str(e) or 'input' in str(e)
            continue
        assert tuple(ss.EDGES[e][0] for e in chosen) in structures, chosen
    assert accepted == structures


# ---- the published genotypes and DARTS's own printed form ----

@pytest.mark.parametrize('name', list(genotypes.NAMED))
def test_published_genotypes_validate_and_round_trip(name):
    g = genotypes.NAMED[name]
    ss.validate(g)
    assert ss.parse(str(g)) == g == ss.parse(g.to_json())
    assert genotypes.resolve(name) is g


def test_darts_printed_form_with_range_parses():
    # Verbatim shape of DARTS's genotypes.py entries: concat written as range(2, 6).
    text = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
            "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
            "('dil_conv_3x3', 2)], normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), "
            "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
            "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=range(2, 6))")
    assert ss.parse(text) == genotypes.DARTS_V2
    assert genotypes.resolve(text) == genotypes.DARTS_V2


def test_resolve_reads_files_and_rejects_unknown_names(tmp_path):
    path = tmp_path / 'g.json'
    path.write_text(genotypes.PC_DARTS.to_json())
    assert genotypes.resolve(str(path)) == genotypes.PC_DARTS
    with pytest.raises(ss.GenotypeError, match="'DARTS_V3' is neither a known name"):
        genotypes.resolve('DARTS_V3')


# ---- hostile genotype text (property-based): accepted and round-tripping, or one GenotypeError line ----

_VALID = st.integers(0, 2 ** 32 - 1).map(lambda seed: ss.sample_genotype(np.random.default_rng(seed)))


def _accepted_or_one_line(text):
    try:
        g = ss.parse(text)
    except ss.GenotypeError as e:
        assert '\n' not in str(e)
        return None
    assert ss.parse(g.to_json()) == g and ss.parse(str(g)) == g
    return g


@settings(max_examples=300, deadline=None)
@given(genotype=_VALID, form=st.sampled_from(['json', 'darts']), data=st.data())
def test_mutated_genotype_text_is_accepted_only_when_valid(genotype, form, data):
    text = genotype.to_json() if form == 'json' else str(genotype)
    kind = data.draw(st.sampled_from(['delete', 'insert', 'replace', 'truncate']))
    at = data.draw(st.integers(0, len(text)))
    piece = data.draw(st.text(alphabet='[](){},:\'"0123456789-e.abcdnxprs_ ', max_size=12))
    mutated = {'delete': text[:at] + text[at + len(piece) + 1:], 'insert': text[:at] + piece + text[at:],
               'replace': text[:at] + piece + text[at + len(piece):], 'truncate': text[:at]}[kind]
    _accepted_or_one_line(mutated)


@pytest.mark.parametrize('text', [
    '[' * 5000 + ']' * 5000,
    '{"normal": ' + '[' * 3000,
    'Genotype(normal=' + '(' * 3000 + ')' * 3000 + ')',
    "Genotype(normal=[('sep_conv_3x3', 10 ** 30)], normal_concat=range(2, 6), reduce=[], reduce_concat=range(2, 6))",
    "Genotype(normal=[], normal_concat=range(2, 10 ** 12), reduce=[], reduce_concat=range(2, 6))",
    "Genotype(normal={1, 2}, normal_concat=range(2, 6), reduce=[], reduce_concat=range(2, 6))",
    str(genotypes.DARTS_V2).replace("('sep_conv_3x3', 1)", "('sep_conv_3x3', 123456789012345678901234567890)"),
    ' ' * (ss.MAX_TEXT + 1),
])
def test_deep_huge_or_odd_genotype_text_is_one_line(text):
    assert _accepted_or_one_line(text) is None


def test_a_binary_genotype_file_names_the_file(tmp_path):
    path = tmp_path / 'genotype.json'
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ss.GenotypeError, match=f'{path}: not UTF-8'):
        genotypes.resolve(str(path))
