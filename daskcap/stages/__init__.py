"""Stages: each a ``DataFrame -> DataFrame`` function plus a frozen params dataclass.

Stage modules never import dask; ``daskcap.graph`` wires them into a Dask graph.
"""
