"""What a profiled table shows: latency against MACs (the paper's Figure 2) and its spread."""
import numpy as np


def spread_at_equal_macs(df, bins=20):
    """Within MACs bins of equal counts, how much faster the fastest architecture is than the slowest
    and than the median (the paper: 32% and 8% on a P100). Medians over the bins, as fractions."""
    edges = np.unique(np.quantile(df['macs'], np.linspace(0, 1, bins + 1)))
    groups = df.groupby(np.digitize(df['macs'], edges[1:-1]))['latency_ms']
    stats = groups.agg(['min', 'max', 'median', 'count'])
    stats = stats[stats['count'] >= 5]
    if stats.empty:
        raise ValueError(f'{len(df)} rows are too few to compare latency at equal MACs')
    return {'bins': int(len(stats)),
            'min_vs_max': float(np.median(1 - stats['min'] / stats['max'])),
            'min_vs_median': float(np.median(1 - stats['min'] / stats['median']))}


def plot_latency_vs_macs(df, path, title=''):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    spread = spread_at_equal_macs(df)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    ax.scatter(df['macs'] / 1e6, df['latency_ms'], s=4, alpha=0.5)
    ax.set_xlabel('multiply-adds (M)')
    ax.set_ylabel('latency (ms, median)')
    ax.set_title(f'{title}\n{len(df)} architectures; at equal MACs the fastest is '
                 f'{100 * spread["min_vs_max"]:.0f}% below the slowest, '
                 f'{100 * spread["min_vs_median"]:.0f}% below the median', fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return spread
