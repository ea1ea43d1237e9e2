"""Training data from a daskcap output: WebDataset shards and a Lance table of its kept
windows, written on the cluster (``export``; ``daskcap export OUTPUT DEST``).

``params`` (what to write and keep), ``samples`` (which windows are kept, and each sample's
key, text and JSON), ``plan`` (which samples go into which shard), ``tar`` (deterministic
shards), ``lance_table`` (fragments and commits), ``places`` (the output read, the
destination checked and its markers), ``tasks`` (the workers' part), ``runner`` (on Dask).
"""

from daskcap.lazy import lazy_names

_HOMES = {
    "export": "daskcap.training_data.runner:export",
    "run_export": "daskcap.training_data.runner:run_export",
    "ExportParams": "daskcap.training_data.params:ExportParams",
    "ExportError": "daskcap.training_data.places:ExportError",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_names(__name__, _HOMES)
