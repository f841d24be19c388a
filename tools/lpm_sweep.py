"""The paper's Table 1: LPM test error against the number of training architectures.

    python -m tools.lpm_sweep --flagfile=configs/lpm_paper.cfg \
        --tables=data/cpu_tflite_cifar.csv --model_dir=runs/lpm_sweep --sizes=500,1000,2000,all

Every size is tested on the same split (per-arch_id, --split_seed) and smaller training sets are
subsets of larger ones. Sizes beyond what the table's training split holds are dropped, and 'all'
(the whole training split) is added in their place. Writes one model directory per size
(`n<size>/`, as tools.train_lpm does), sweep.csv and sweep.png to --model_dir (--overwrite replaces
those of an earlier sweep, nothing else). Takes the recipe flags of tools.train_lpm (except
--max_train_rows, which the sweep sets). The norm_* columns are the errors against load-normalised
test labels (tables with ref_ms; see ladnas_tf.lpm.training).
"""
from absl import flags

from ladnas_tf.bad_input import BadInput
from ladnas_tf.lpm import training
from . import cli, train_lpm  # train_lpm defines the flags the sweep shares with it

flags.DEFINE_list('sizes', ['10000', '20000', '40000', '60000', '80000'],
                  "Training-set sizes (the paper's Table 1), or 'all'.")
FLAGS = flags.FLAGS


def main(argv):
    if FLAGS.max_train_rows:
        raise BadInput('--max_train_rows is set by the sweep: use --sizes')
    recipe, df = train_lpm.inputs(argv)
    table = training.size_sweep(df, recipe, FLAGS.model_dir, FLAGS.sizes, FLAGS.split_seed, FLAGS.test_fraction,
                                FLAGS.overwrite, FLAGS.progress, FLAGS.force_format)
    print(table.to_string(index=False))


if __name__ == '__main__':
    cli.run(main)
