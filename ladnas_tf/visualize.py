"""Pictures of cells and searches: DARTS-style cell drawings (graphviz DOT), the alpha heatmap for
tf.summary.image, and scatter plots (matplotlib, Agg, no display needed)."""
import os
import shutil
import subprocess

import numpy as np
from absl import logging

from ladnas_tf import search_space
from ladnas_tf.bad_input import BadInput

# DARTS's plot: inputs green, intermediate nodes blue, the output yellow.
_STYLE = {'input': 'darkseagreen2', 'node': 'lightblue', 'output': 'palegoldenrod'}
_INPUT_NAMES = ('c_{k-2}', 'c_{k-1}')
OUTPUT_NAME = 'c_{k}'


def _quote(text):
    return '"' + str(text).replace('\\', '\\\\').replace('"', '\\"') + '"'


def cell_to_dot(cell, title=''):
    """Graphviz DOT text of a discrete cell ((op, input) pairs, two per node) laid out as DARTS draws
    it: c_{k-2}, c_{k-1} -> nodes 0..3 (edges labelled with ops) -> c_{k}."""
    search_space.validate_cell(cell)
    name = lambda i: _INPUT_NAMES[i] if i < search_space.NUM_INPUTS else str(i - search_space.NUM_INPUTS)
    lines = ['digraph cell {', '  rankdir=LR;',
             '  edge [fontsize=20, fontname="times"];',
             '  node [style="rounded,filled", shape=rect, align=center, fontsize=20, height=0.5, '
             'width=0.5, penwidth=2, fontname="times"];']
    if title:
        lines.append(f'  label={_quote(title)}; labelloc=t; fontsize=20;')
    for i in _INPUT_NAMES:
        lines.append(f'  {_quote(i)} [fillcolor={_STYLE["input"]}];')
    for node in range(search_space.NUM_NODES):
        lines.append(f'  {_quote(node)} [fillcolor={_STYLE["node"]}];')
    lines.append(f'  {_quote(OUTPUT_NAME)} [fillcolor={_STYLE["output"]}];')
    for k, (op, i) in enumerate(cell):
        node = k // search_space.INPUTS_PER_NODE
        lines.append(f'  {_quote(name(i))} -> {_quote(node)} [label={_quote(op)}, fillcolor=gray];')
    for node in range(search_space.NUM_NODES):
        lines.append(f'  {_quote(node)} -> {_quote(OUTPUT_NAME)} [fillcolor=gray];')
    lines.append('}')
    return '\n'.join(lines) + '\n'


def save_cell_drawing(cell, path_without_ext, title=''):
    """Writes <path>.dot, and <path>.png and .pdf when graphviz's `dot` is installed. A failing or
    missing `dot` is logged, never raised: the DOT file is the drawing. Returns the paths written."""
    dot_path = f'{path_without_ext}.dot'
    os.makedirs(os.path.dirname(dot_path) or '.', exist_ok=True)
    with open(dot_path, 'w') as f:
        f.write(cell_to_dot(cell, title))
    written = [dot_path]
    dot = shutil.which('dot')
    if dot is None:
        logging.info('graphviz `dot` not found: wrote %s only', dot_path)
        return written
    for fmt in ('png', 'pdf'):
        out = f'{path_without_ext}.{fmt}'
        try:
            subprocess.run([dot, f'-T{fmt}', dot_path, '-o', out], check=True, capture_output=True,
                           timeout=60)
            written.append(out)
        except (OSError, subprocess.SubprocessError) as e:
            logging.warning('graphviz could not render %s: %s', out, e)
    return written


def alpha_image(alpha, cell_pixels=8, colormap='viridis'):
    """A heatmap of an architecture weight matrix (edges x ops, e.g. softmax(alpha) of 14 x 8) as a
    [1, H, W, 3] uint8 batch for tf.summary.image: one cell_pixels square per entry, scaled by the
    largest entry so an undecided (uniform) alpha reads as flat and a decided one as bright spots."""
    from matplotlib import colormaps
    alpha = np.asarray(alpha, np.float64)
    if alpha.ndim != 2 or not alpha.size or not np.isfinite(alpha).all():
        raise BadInput(f'alpha must be a finite 2-D matrix (edges x ops), got shape {alpha.shape}')
    peak = np.abs(alpha).max()
    scaled = np.abs(alpha) / peak if peak > 0 else alpha * 0
    rgb = colormaps[colormap](scaled)[..., :3]
    rgb = np.repeat(np.repeat(rgb, cell_pixels, axis=0), cell_pixels, axis=1)
    return np.round(rgb * 255).astype(np.uint8)[None]


def scatter_png(x, y, path, xlabel='', ylabel='', title='', diagonal=False):
    """Saves a scatter plot of y against x as a PNG; diagonal draws y = x (predicted vs measured)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise BadInput(f'x and y differ in length: {x.size} vs {y.size}')
    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(x, y, s=8, alpha=0.6)
    if diagonal and x.size:
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        ax.plot([lo, hi], [lo, hi], 'k--', linewidth=1)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.fspath(path)) or '.', exist_ok=True)
    fig.savefig(path, format='png')
    return path
