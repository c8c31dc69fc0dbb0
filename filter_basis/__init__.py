"""Learning filter basis for CNN compression (Li, Gu, Van Gool, Timofte, ICCV 2019).

The method is a layer: :class:`BasisConv2d` convolves every ``basis_size``-channel split of its input
with one shared bank of ``n_basis`` filters and mixes the results with a 1x1 projection.  Model-level
tools convert trained networks (:func:`basisify`), fold them for deployment (:func:`fuse`) and count
their cost (:func:`summarize`); :func:`load_run` gives the trained model of an experiment folder.
Names are imported lazily so that ``import filter_basis`` stays cheap for the training engine, which
lives in :mod:`filter_basis.engine`.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Basis": "filter_basis.layers",
    "BasisConv2d": "filter_basis.layers",
    "FactorConv2d": "filter_basis.layers",
    "SIC": "filter_basis.layers",
    "GroupConv2d": "filter_basis.layers",
    "norm_act": "filter_basis.layers",
    "set_basis_form": "filter_basis.layers",
    "basisify": "filter_basis.convert",
    "ConversionReport": "filter_basis.convert",
    "approximation_loss": "filter_basis.approx",
    "fuse": "filter_basis.deploy",
    "fuse_with_report": "filter_basis.deploy",
    "FuseReport": "filter_basis.deploy",
    "compress": "filter_basis.compress",
    "CompressionReport": "filter_basis.compress",
    "summarize": "filter_basis.complexity",
    "Summary": "filter_basis.complexity",
    "load_run": "filter_basis.engine.evaluation",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'filter_basis' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
