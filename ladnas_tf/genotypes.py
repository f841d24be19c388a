"""Published genotypes, in DARTS's form, by the names users know them by."""
from ladnas_tf.search_space import make_genotype

# Liu et al., DARTS (ICLR 2019), first- and second-order CIFAR-10 cells.
DARTS_V1 = make_genotype(
    normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1),
            ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)])
DARTS_V2 = make_genotype(
    normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)])
# Xu et al., PC-DARTS (ICLR 2020), CIFAR-10 cell.
PC_DARTS = make_genotype(
    normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1),
            ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)],
    reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2),
            ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)])
# Chen et al., P-DARTS (ICCV 2019), CIFAR-10 cell.
PDARTS = make_genotype(
    normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 0), ('dil_conv_5x5', 4)],
    reduce=[('avg_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 2),
            ('max_pool_3x3', 0), ('dil_conv_3x3', 1), ('dil_conv_3x3', 1), ('dil_conv_5x5', 3)])

NAMED = {'DARTS_V1': DARTS_V1, 'DARTS_V2': DARTS_V2, 'PC_DARTS': PC_DARTS, 'PDARTS': PDARTS}


def resolve(spec):
    """A genotype from a published name, a path to a JSON/DARTS-text file, or the text itself."""
    import os
    from ladnas_tf import search_space
    if spec in NAMED:
        return NAMED[spec]
    if os.path.isfile(spec):
        try:
            with open(spec, encoding='utf-8') as f:
                text = f.read(search_space.MAX_TEXT + 1)
        except UnicodeDecodeError:
            raise search_space.GenotypeError(f'genotype file {spec}: not UTF-8 text (a binary file?)') from None
        return _parse(spec, text)
    if spec.lstrip().startswith(('{', 'Genotype(')):
        return _parse(spec, spec)
    raise search_space.GenotypeError(
        f'genotype {spec!r} is neither a known name ({", ".join(NAMED)}) nor a file')


def _parse(spec, text):
    from ladnas_tf import search_space
    name = spec if len(spec) <= 80 else spec[:77] + '...'
    try:
        return search_space.parse(text)
    except search_space.GenotypeError as e:
        raise search_space.GenotypeError(f'genotype {name}: {e}') from None
    except (TypeError, ValueError) as e:  # a structure the validator did not foresee: still one line
        raise search_space.GenotypeError(f'genotype {name} is malformed: {e}') from None
