"""Pictures of cells and searches: DARTS-style cell drawings (graphviz DOT, rendered by graphviz or else
drawn by matplotlib), the alpha heatmap for tf.summary.image, and scatter plots (matplotlib, Agg, no
display needed)."""
import os
import shutil
import subprocess

import numpy as np
from absl import logging

from ladnas_tf import search_space
from ladnas_tf.bad_input import BadInput

# DARTS's plot: inputs green, intermediate nodes blue, the output yellow (X11 names for graphviz; the
# same colours in hex for matplotlib, which lacks darkseagreen2).
_STYLE = {'input': 'darkseagreen2', 'node': 'lightblue', 'output': 'palegoldenrod'}
_RGB = {'input': '#b4eeb4', 'node': '#add8e6', 'output': '#eee8aa'}
_INPUT_NAMES = ('c_{k-2}', 'c_{k-1}')
OUTPUT_NAME = 'c_{k}'


def _quote(text):
    return '"' + str(text).replace('\\', '\\\\').replace('"', '\\"') + '"'


def _node_name(i):
    """The drawing's name of cell state i: the two inputs, then the intermediate nodes 0..3."""
    return _INPUT_NAMES[i] if i < search_space.NUM_INPUTS else str(i - search_space.NUM_INPUTS)


def cell_to_dot(cell, title=''):
    """Graphviz DOT text of a discrete cell ((op, input) pairs, two per node) laid out as DARTS draws
    it: c_{k-2}, c_{k-1} -> nodes 0..3 (edges labelled with ops) -> c_{k}."""
    search_space.validate_cell(cell)
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
        lines.append(f'  {_quote(_node_name(i))} -> {_quote(node)} [label={_quote(op)}, fillcolor=gray];')
    for node in range(search_space.NUM_NODES):
        lines.append(f'  {_quote(node)} -> {_quote(OUTPUT_NAME)} [fillcolor=gray];')
    lines.append('}')
    return '\n'.join(lines) + '\n'


def _positions():
    """Where each state of the cell sits: nodes 0..3 on a line from left to right, the inputs above and
    below its start, the output at its end."""
    positions = {_INPUT_NAMES[0]: (0.0, 2.4), _INPUT_NAMES[1]: (0.0, -2.4)}
    for node in range(search_space.NUM_NODES + 1):
        positions[str(node) if node < search_space.NUM_NODES else OUTPUT_NAME] = (2.5 + 2.2 * node, 0.0)
    return positions


def cell_figure(cell, title=''):
    """A matplotlib Figure of a discrete cell, for machines without graphviz: rounded boxes for c_{k-2},
    c_{k-1}, 0..3 and c_{k} (DARTS's colours), an arrow per edge labelled with its op. Edges that skip
    a node of the line arc around it: above between nodes, below into c_{k}."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    search_space.validate_cell(cell)
    where = _positions()
    fig = Figure(figsize=(11, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_aspect('equal')
    ax.set_xlim(-0.8, where[OUTPUT_NAME][0] + 0.8)
    ax.set_ylim(-2.9, 2.9)
    for name, (x, y) in where.items():
        kind = 'input' if name in _INPUT_NAMES else 'output' if name == OUTPUT_NAME else 'node'
        ax.text(x, y, f'${name}$' if '_' in name else name, ha='center', va='center', fontsize=14, zorder=3,
                bbox={'boxstyle': 'round,pad=0.4', 'facecolor': _RGB[kind], 'edgecolor': 'black', 'linewidth': 2})

    def arrow(source, target, label=None, bend=0.0, at=0.5):
        """An edge; `bend` is matplotlib's arc3 rad (> 0 bows below a left-to-right edge), the label sits
        at fraction `at` along the curve (a quadratic Bezier through arc3's control point)."""
        (x1, y1), (x2, y2) = where[source], where[target]
        ax.annotate('', xy=(x2, y2), xytext=(x1, y1), zorder=1,
                    arrowprops={'arrowstyle': '-|>', 'color': 'gray', 'linewidth': 1.2, 'shrinkA': 16,
                                'shrinkB': 16, 'connectionstyle': f'arc3,rad={bend}'})
        if label:
            cx, cy = (x1 + x2) / 2 + bend * (y2 - y1), (y1 + y2) / 2 - bend * (x2 - x1)
            point = lambda a, c, b: (1 - at) ** 2 * a + 2 * (1 - at) * at * c + at ** 2 * b
            ax.text(point(x1, cx, x2), point(y1, cy, y2), label, ha='center', va='center', fontsize=9, zorder=2,
                    bbox={'boxstyle': 'round,pad=0.15', 'facecolor': 'white', 'edgecolor': 'none', 'alpha': 0.85})

    for k, (op, i) in enumerate(cell):
        node = k // search_space.INPUTS_PER_NODE
        if i < search_space.NUM_INPUTS:  # fans in from above or below: labels near the node, apart
            arrow(_node_name(i), str(node), op, at=0.65)
        else:
            arrow(_node_name(i), str(node), op, bend=0.0 if node == i - search_space.NUM_INPUTS + 1 else -0.6)
    for node in range(search_space.NUM_NODES):
        arrow(str(node), OUTPUT_NAME, bend=0.0 if node == search_space.NUM_NODES - 1 else 0.3)
    if title:
        ax.set_title(title, fontsize=14)
    fig.tight_layout()
    return fig


def save_cell_drawing(cell, path_without_ext, title=''):
    """Writes <path>.dot, and <path>.png and .pdf rendered by graphviz's `dot`; without a working `dot`
    (missing, or failing on the PNG), <path>.png drawn by matplotlib instead. A failing `dot` is
    logged, never raised. Returns the paths written."""
    dot_path = f'{path_without_ext}.dot'
    os.makedirs(os.path.dirname(dot_path) or '.', exist_ok=True)
    with open(dot_path, 'w') as f:
        f.write(cell_to_dot(cell, title))
    written = [dot_path]
    dot = shutil.which('dot')
    for fmt in ('png', 'pdf') if dot else ():
        out = f'{path_without_ext}.{fmt}'
        try:
            subprocess.run([dot, f'-T{fmt}', dot_path, '-o', out], check=True, capture_output=True,
                           timeout=60)
            written.append(out)
        except (OSError, subprocess.SubprocessError) as e:
            logging.warning('graphviz could not render %s: %s', out, e)
    png = f'{path_without_ext}.png'
    if png not in written:
        logging.info('graphviz `dot` %s: %s drawn by matplotlib', 'failed' if dot else 'not found', png)
        cell_figure(cell, title).savefig(png, format='png')
        written.append(png)
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
