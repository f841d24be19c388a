"""The README's "Networks and their counts": parameters and multiply-adds of published genotypes' evaluation
networks, built as Keras models, beside the published figures.

    python -m benchmarks.network_counts --json=docs/benchmarks/network_counts.json
"""
import argparse

from ladnas_tf import genotypes, network

from . import save_json

# (name, setting, published params, published MACs): the DARTS log / paper tables, None where unpublished.
NETWORKS = (('DARTS_V2', 'cifar', 3_349_342, None),
            ('PC_DARTS', 'cifar', 3_600_000, None),
            ('DARTS_V2', 'imagenet', 4_700_000, 574_000_000))


def count(name, setting):
    model = network.build_network(getattr(genotypes, name), setting)
    return {'params': model.count_eval_params(), 'macs': int(model.count_macs()),
            'channels': model.channels, 'cells': model.num_cells, 'image_size': model.image_size}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--json', help='Also write the figures to this JSON file.')
    args = parser.parse_args(argv)
    rows = []
    for name, setting, params, macs in NETWORKS:
        rows.append({'genotype': name, 'setting': setting, **count(name, setting),
                     'published_params': params, 'published_macs': macs})
        row, published = rows[-1], f' (published {macs / 1e6:.0f}M)' if macs else ''
        print(f'{name:9s} {setting:9s} C={row["channels"]:<3d} N={row["cells"]:<3d} params {row["params"]:>10,d} '
              f'(published {params:,d})  MACs {row["macs"] / 1e6:7.1f}M{published}')
    if args.json:
        save_json(args.json, {'networks': rows}, {'counter': 'convolutions and the classifier, no auxiliary head'})


if __name__ == '__main__':
    main()
