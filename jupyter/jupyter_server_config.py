# The project's Jupyter configuration, read by `make lab` and tests/test_jupyter_server.py through
# JUPYTER_CONFIG_PATH=<repo>/jupyter (added to, not replacing, the user's ~/.jupyter, which keeps
# priority; nothing is written to the home directory).
#
# Jupytext's server extension (enabled by installing jupytext) serves the percent-format `.py`
# notebooks in notebooks/ as notebooks; the settings overrides below make "Jupytext Notebook" the
# default viewer of Python files in JupyterLab, so a double-click opens notebooks/02_*.py as a
# notebook (right-click → Open With → Editor still opens the text).
from pathlib import Path

c = get_config()  # noqa: F821 (provided by traitlets when it runs this file)

# JupyterLab's application settings directory: overrides.json there sets defaults that the user's
# own settings (Settings → Document Manager) still override.
c.LabApp.app_settings_dir = str(Path(__file__).resolve().parent / "lab" / "settings")

# A save from JupyterLab rewrites the paired .py through Jupytext. Without this filter Jupytext adds
# its version and format version to the header of every notebook it saves (a dirty diff on each
# save); the filter also leaves itself out of the header (Jupytext records format options there), so
# a save that changes no cell rewrites the .py byte for byte (tests/test_jupyter_server.py). The
# default filter (kernelspec and jupytext kept; language_info, widgets, ... dropped) still applies.
# Jupytext prefers a jupytext.toml or a [tool.jupytext] table above the notebook, if one is added.
c.ContentsManager.notebook_metadata_filter = ",".join([
    "-jupytext.text_representation.jupytext_version",
    "-jupytext.text_representation.format_version",
    "-jupytext.notebook_metadata_filter",
])
