"""Run profiles: one code path, four presets.

* ``smoke`` — CI via nbmake: every cell runs and every figure is drawn; numbers are meaningless.
* ``cpu``   — the default: the phenomena at reduced scale on a 2-core CPU (≤ 45 min a notebook).
* ``long``  — the late stages (LR3–LR5, LM3–LM4) on the same CPU where ``cpu`` cannot fit them
  (≤ 2.5 h a notebook, resumable); a setting with nothing more to show runs its ``cpu`` settings.
* ``paper`` — the papers' exact hyperparameters (meant for a GPU).

Each setting (regression, language, ...) has a submodule defining a frozen dataclass and a
``PROFILES`` dict with one instance per profile name. Use :func:`get_profile`::

    cfg = get_profile("regression", "cpu", num_seeds=2)   # overrides via dataclasses.replace
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any

__all__ = ["PROFILE_NAMES", "DEFAULT_PROFILE", "check_profile", "default_profile", "get_profile", "settings"]

PROFILE_NAMES = ("smoke", "cpu", "long", "paper")
DEFAULT_PROFILE = "cpu"
ENV_VAR = "STAGEWISE_PROFILE"


def check_profile(name: str) -> str:
    """Return ``name`` if it is a profile name, else raise a ValueError listing the allowed ones."""
    if name not in PROFILE_NAMES:
        raise ValueError(f"profile must be one of {', '.join(PROFILE_NAMES)}; got {name!r}")
    return name


def default_profile() -> str:
    """The profile a notebook runs when nobody injects one: ``$STAGEWISE_PROFILE`` or ``cpu``.

    The test suite sets ``STAGEWISE_PROFILE=smoke`` so nbmake runs notebooks as they are.
    """
    return check_profile(os.environ.get(ENV_VAR, DEFAULT_PROFILE))


def settings() -> tuple[str, ...]:
    """Names of the settings that define profiles (submodules of this package)."""
    import pkgutil

    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)))


def get_profile(setting: str, name: str, **overrides: Any):
    """The ``name`` preset of ``setting``, with field ``overrides`` applied.

    Unknown settings, profile names or override fields raise a ValueError naming them.
    """
    check_profile(name)
    if setting not in settings():
        raise ValueError(f"setting must be one of {', '.join(settings())}; got {setting!r}")
    module = importlib.import_module(f"{__name__}.{setting}")
    preset = module.PROFILES[name]
    if overrides:
        allowed = {f.name for f in dataclasses.fields(preset)}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ValueError(
                f"unknown override(s) {unknown} for the {setting} profile; allowed fields: {sorted(allowed)}"
            )
        preset = dataclasses.replace(preset, **overrides)
    return preset
