"""How much two latency tables agree on the architectures both measured (e.g. float32 against int8).

    python -m tools.compare_tables --tables=data/cpu_tflite_cifar.csv,data/cpu_tflite_int8_cifar.csv

Prints n (common arch_ids), Kendall tau and Spearman rho between the two latencies, the same on
latencies divided by each row's reference bracket (ref_ms, which cancels machine drift), and the
median per-architecture ratio second / first. With --lpm_dir, also scores that LPM on the second
table's architectures (a predictor trained on one machine, tested on another): rank correlation, and
relative error after one scale factor (see lpm.metrics.transfer_metrics), on raw and on ref-normalised latency.
"""
from absl import flags

from ladnas_tf.bad_input import BadInput
from . import cli

FLAGS = flags.FLAGS
flags.DEFINE_list('tables', None, 'Two latency tables (CSV): first,second.')
flags.DEFINE_string('lpm_dir', None, "Also score this LPM (a name, see tools.lpms, or a directory) on the second "
                    "table's architectures.")


def main(argv):
    if len(argv) > 1:
        raise BadInput(f'unexpected arguments {argv[1:]}')
    if not FLAGS.tables or len(FLAGS.tables) != 2:
        raise BadInput('--tables needs exactly two tables: first,second')
    from ladnas_tf.lpm import metrics
    from ladnas_tf.profiling import table
    first, second = (table.read(path) for path in FLAGS.tables)
    result = metrics.compare_tables(first, second)
    print(f"{FLAGS.tables[1]} against {FLAGS.tables[0]}: n={result['n']} common architectures")
    print(f"  Kendall tau {result['kendall_tau']:.3f}, Spearman rho {result['spearman_rho']:.3f} "
          f"(latency / ref_ms: tau {result['kendall_tau_ref_normalised']:.3f}, "
          f"rho {result['spearman_rho_ref_normalised']:.3f})")
    print(f"  median latency {result['median_ms'][0]:.3f} ms vs {result['median_ms'][1]:.3f} ms; "
          f"median ratio second/first {result['median_ratio']:.3f}")
    if FLAGS.lpm_dir:
        from ladnas_tf.lpm import registry
        transfer = metrics.lpm_transfer(registry.load(FLAGS.lpm_dir), second)
        for view, m in transfer.items():
            print(f"  LPM {FLAGS.lpm_dir} on {FLAGS.tables[1]} ({view}, n={m['n']}): Kendall tau "
                  f"{m['kendall_tau']:.3f}, Spearman rho {m['spearman_rho']:.3f}; scaled by {m['scale']:.4g}: "
                  f"MRE {m['mre_pct']:.2f}%, {100 * m['share_within_10pct']:.1f}% within +-10%")


if __name__ == '__main__':
    cli.run(main)
