"""The progress bar: the notebook widget only where ipywidgets can draw it, never a warning."""

import importlib
import importlib.util
import warnings

import stagewise.progress


def _reloaded(monkeypatch, has_widgets: bool):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (real("tqdm") if has_widgets else None) if name == "ipywidgets" else real(name, *a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an "IProgress not found" warning would fail here
        return importlib.reload(stagewise.progress)


def test_text_bar_without_ipywidgets_and_widget_bar_with_it(monkeypatch):
    import tqdm.auto
    import tqdm.std

    try:
        assert _reloaded(monkeypatch, has_widgets=False).tqdm is tqdm.std.tqdm
        assert _reloaded(monkeypatch, has_widgets=True).tqdm is tqdm.auto.tqdm
    finally:
        monkeypatch.undo()
        importlib.reload(stagewise.progress)
