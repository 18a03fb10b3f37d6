"""The progress bar every sweep and training loop uses: tqdm's notebook widget where ipywidgets is
installed, its plain text bar otherwise.

``tqdm.auto`` alone picks the widget in any Jupyter kernel and, without ipywidgets (not a
dependency of this project), warns "IProgress not found" into every executed notebook before
falling back to the text bar; this makes the same choice without the warning.
"""
from __future__ import annotations

import importlib.util

__all__ = ["tqdm"]

if importlib.util.find_spec("ipywidgets") is not None:
    from tqdm.auto import tqdm
else:
    from tqdm.std import tqdm
