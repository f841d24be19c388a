"""What a profiled table shows: latency against MACs (the paper's Figure 2) and its spread."""
import numpy as np

from ladnas_tf.bad_input import BadInput

QUIET = 0.05  # a row is "quiet" when its reference network ran within 5% of the table's median


def quiet_rows(df, tolerance=QUIET):
    """Rows timed while the machine was as fast as usual: their bracketing reference network (`ref_ms`)
    ran within `tolerance` of its median, so load cannot explain their latency."""
    return df[(df['ref_ms'] / df['ref_ms'].median() - 1).abs() <= tolerance]


def spread_at_equal_macs(df, bins=20):
    """Within MACs bins of equal counts, how much faster the fastest architecture is than the slowest
    and than the median (the paper: 32% and 8% on a P100). Medians over the bins, as fractions."""
    edges = np.unique(np.quantile(df['macs'], np.linspace(0, 1, bins + 1)))
    groups = df.groupby(np.digitize(df['macs'], edges[1:-1]))['latency_ms']
    stats = groups.agg(['min', 'max', 'median', 'count'])
    stats = stats[stats['count'] >= 5]
    if stats.empty:
        raise BadInput(f'{len(df)} rows are too few to compare latency at equal MACs')
    return {'bins': int(len(stats)),
            'min_vs_max': float(np.median(1 - stats['min'] / stats['max'])),
            'min_vs_median': float(np.median(1 - stats['min'] / stats['median']))}


def plot_latency_vs_macs(df, path, title=''):
    """Scatter of latency against MACs, coloured by the load each row was timed under (its reference's
    slowdown), titled with the spread at equal MACs over all rows and over the quiet ones."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    spread, quiet = spread_at_equal_macs(df), spread_at_equal_macs(quiet_rows(df))
    fig = Figure(figsize=(7.2, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    load = df['ref_ms'] / df['ref_ms'].median()
    points = ax.scatter(df['macs'] / 1e6, df['latency_ms'], c=load, cmap='viridis_r', vmin=0.9, vmax=1.5,
                        s=4, alpha=0.6)
    fig.colorbar(points, ax=ax, label='load: reference ms / its median')
    ax.set_xlabel('multiply-adds (M)')
    ax.set_ylabel('latency (ms, median of the timed runs)')
    ax.set_title(f'{title}: {len(df)} architectures\nat equal MACs the fastest is '
                 f'{100 * spread["min_vs_max"]:.0f}% below the slowest, {100 * spread["min_vs_median"]:.0f}% '
                 f'below the median\n(quiet rows only: {100 * quiet["min_vs_max"]:.0f}% and '
                 f'{100 * quiet["min_vs_median"]:.0f}%)', fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return {**spread, 'quiet': quiet}
