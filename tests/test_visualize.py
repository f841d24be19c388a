"""Cell drawings (DOT; PNG by graphviz or matplotlib), the alpha heatmap and scatter plots."""
import re
import shutil

import numpy as np
import pytest
from matplotlib.text import Annotation

import needs
from ladnas_tf import search_space, visualize
from ladnas_tf.genotypes import DARTS_V2

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
NODES = ('c_{k-2}', 'c_{k-1}', '0', '1', '2', '3', 'c_{k}')


def _edges(dot):
    """(source, target, op label or None) of every edge statement in DOT text."""
    return [(a, b, label or None)
            for a, b, label in re.findall(r'"([^"]+)" -> "([^"]+)"(?: \[label="([^"]+)")?', dot)]


def test_dot_has_every_edge_and_op_of_darts_v2_normal_cell():
    dot = visualize.cell_to_dot(DARTS_V2.normal, 'DARTS_V2 normal')
    edges = _edges(dot)
    names = {0: 'c_{k-2}', 1: 'c_{k-1}'}
    expected = [(names.get(i, str(i - 2)), str(k // 2), op) for k, (op, i) in enumerate(DARTS_V2.normal)]
    assert sorted(e for e in edges if e[2]) == sorted(expected)
    assert sorted(e for e in edges if not e[2]) == [(str(n), 'c_{k}', None) for n in range(4)]
    assert dot.startswith('digraph') and 'DARTS_V2 normal' in dot
    for node in ('c_{k-2}', 'c_{k-1}', '0', '1', '2', '3', 'c_{k}'):
        assert f'"{node}" [fillcolor=' in dot


def test_dot_refuses_a_cell_outside_the_space():
    bad = (('conv_7x7', 0),) + DARTS_V2.normal[1:]
    with pytest.raises(search_space.GenotypeError, match='conv_7x7'):
        visualize.cell_to_dot(bad)


def test_save_without_dot_draws_the_png_with_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    written = visualize.save_cell_drawing(DARTS_V2.reduce, str(tmp_path / 'cells' / 'reduce'), 'reduce')
    assert written == [str(tmp_path / 'cells' / f'reduce.{ext}') for ext in ('dot', 'png')]
    assert (tmp_path / 'cells' / 'reduce.dot').read_text() == visualize.cell_to_dot(DARTS_V2.reduce, 'reduce')
    assert (tmp_path / 'cells' / 'reduce.png').read_bytes()[:8] == PNG_MAGIC


def test_save_survives_a_failing_dot(tmp_path, monkeypatch):
    false = shutil.which('false')
    if false is None:
        pytest.skip('no `false` program to stand in for a broken graphviz')
    monkeypatch.setattr(shutil, 'which', lambda name: false)
    written = visualize.save_cell_drawing(DARTS_V2.normal, str(tmp_path / 'normal'))
    assert written == [str(tmp_path / 'normal.dot'), str(tmp_path / 'normal.png')]  # the PNG by matplotlib
    assert (tmp_path / 'normal.png').read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / 'normal.pdf').exists()


@pytest.mark.parametrize('cell', [DARTS_V2.normal, DARTS_V2.reduce])
def test_the_matplotlib_drawing_has_every_node_edge_and_op(cell):
    ax = visualize.cell_figure(cell, 'a cell').axes[0]
    nodes = {t.get_position(): t.get_text().strip('$') for t in ax.texts
             if not isinstance(t, Annotation) and t.get_text().strip('$') in NODES}
    assert sorted(nodes.values()) == sorted(NODES)
    arrows = sorted((nodes[a.xyann], nodes[a.xy]) for a in ax.texts if isinstance(a, Annotation))
    names = {0: 'c_{k-2}', 1: 'c_{k-1}'}
    assert arrows == sorted([(names.get(i, str(i - 2)), str(k // 2)) for k, (_, i) in enumerate(cell)]
                            + [(str(n), 'c_{k}') for n in range(4)])
    labels = [t.get_text() for t in ax.texts if not isinstance(t, Annotation) and t.get_position() not in nodes]
    assert sorted(labels) == sorted(op for op, _ in cell)
    assert ax.get_title() == 'a cell'


def test_save_renders_png_and_pdf_with_dot(tmp_path):
    needs.program('dot', 'graphviz: apt-get install graphviz; .ci/run does')
    written = visualize.save_cell_drawing(DARTS_V2.normal, str(tmp_path / 'normal'), 'normal')
    assert written == [str(tmp_path / f'normal.{ext}') for ext in ('dot', 'png', 'pdf')]
    assert (tmp_path / 'normal.png').read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / 'normal.pdf').read_bytes()[:4] == b'%PDF'


def test_alpha_image_is_a_uint8_heatmap_batch():
    alpha = np.full((search_space.NUM_EDGES, search_space.NUM_OPS), 1 / search_space.NUM_OPS)
    alpha[3] = 0.0
    alpha[3, 4] = 1.0
    image = visualize.alpha_image(alpha, cell_pixels=4)
    assert image.shape == (1, 14 * 4, 8 * 4, 3) and image.dtype == np.uint8
    square = lambda e, o: image[0, 4 * e:4 * e + 4, 4 * o:4 * o + 4]
    assert (square(3, 4) == square(3, 4)[0, 0]).all()          # one colour per entry
    assert (square(0, 0) == square(13, 7)).all()                 # equal weights, equal colours
    assert not (square(3, 4) == square(0, 0)).all()             # the decided op stands out


def test_alpha_image_refuses_bad_input():
    with pytest.raises(ValueError, match='2-D'):
        visualize.alpha_image(np.zeros(112))
    with pytest.raises(ValueError, match='finite'):
        visualize.alpha_image(np.full((14, 8), np.nan))


def test_scatter_png_writes_a_png(tmp_path):
    path = visualize.scatter_png([1, 2, 3], [1.1, 1.9, 3.2], tmp_path / 'plots' / 'lpm.png',
                                 'measured (ms)', 'predicted (ms)', 'LPM', diagonal=True)
    assert (tmp_path / 'plots' / 'lpm.png').read_bytes()[:8] == PNG_MAGIC
    assert str(path).endswith('lpm.png')
    with pytest.raises(ValueError, match='length'):
        visualize.scatter_png([1, 2], [1], tmp_path / 'bad.png')
