"""LA-DARTS in TensorFlow / Keras: latency-aware differentiable architecture search.

The public names, each imported on first use so that `import ladnas_tf` (and `ladnas --help`) loads no
TensorFlow:

    search           the search (search.SearchConfig, search.search(config, model_dir) -> summary)
    train            training a genotype from scratch (train.Recipe, train.train(genotype, recipe, model_dir))
    export           a trained network to TFLite (export.export)
    genotypes        the published cells (DARTS_V2, PDARTS, ...)
    LPM              the latency predictor
    load_predictor   a predictor by name or directory, ready to predict (lpm.registry.load)
    list_predictors  the shipped and the user's predictors (lpm.registry.list_predictors)
"""
import importlib

__version__ = '0.1.0'

# name -> (module, attribute or None for the module itself)
_PUBLIC = {
    'search': ('ladnas_tf.search', None),
    'train': ('ladnas_tf.train', None),
    'export': ('ladnas_tf.export', None),
    'genotypes': ('ladnas_tf.genotypes', None),
    'LPM': ('ladnas_tf.lpm.model', 'LPM'),
    'load_predictor': ('ladnas_tf.lpm.registry', 'load'),
    'list_predictors': ('ladnas_tf.lpm.registry', 'list_predictors'),
}
__all__ = [*_PUBLIC, '__version__']


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    module, attribute = _PUBLIC[name]
    found = importlib.import_module(module)
    return found if attribute is None else getattr(found, attribute)


def __dir__():
    return sorted({*globals(), *_PUBLIC})
