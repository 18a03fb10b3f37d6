"""stagewise: loss-landscape degeneracy and stagewise development in transformers.

Library behind the notebooks in ``notebooks/``: models and data (``models``, ``data``), one
training loop (``train``), the local learning coefficient (``llc``), stage detection
(``stages``), essential dynamics, probes, Hessian statistics, the artifact cache and the run
profiles.
"""

__version__ = "0.1.0"
