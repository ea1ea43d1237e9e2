"""Stages: each a ``DataFrame -> DataFrame`` function plus a frozen params dataclass.

Stage modules never import dask; ``daskcap.run`` runs them on a Dask cluster.
"""
