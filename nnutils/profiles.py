"""Parameter profiles (smoke / cpu / kaggle) for the numbered notebooks, kept in one file.

``nnutils/profiles.yaml`` holds every notebook setting for every profile. A notebook's
papermill ``parameters`` cell only names the profile (and optional overrides)::

    profile = "cpu"
    params = {}

and its next cell calls :func:`resolve` to get the settings, so values are never copied
into notebooks. Set ``NNUTILS_PROFILES`` to use another YAML file.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

__all__ = ["Params", "load_profiles", "resolve", "data_spec", "repo_root", "list_notebooks", "known_keys"]

NOTEBOOK_RE = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")


class Params(dict):
    """A dict whose keys are also attributes (``cfg.data_dir``); shows as a table in Jupyter."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no setting {key!r}; settings: {sorted(self)}") from None

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td style='text-align:left'><code>{k}</code></td>"
                       f"<td style='text-align:left'>{v!r}</td></tr>" for k, v in self.items())
        return f"<table><tr><th>setting</th><th>value</th></tr>{rows}</table>"


def profiles_path() -> Path:
    """The profiles file: ``$NNUTILS_PROFILES``, else ``nnutils/profiles.yaml``.

    Returns
    -------
    Path
    """
    return Path(os.environ.get("NNUTILS_PROFILES", Path(__file__).with_name("profiles.yaml")))


def load_profiles(path: str | Path | None = None) -> dict:
    """The parsed profiles file.

    Parameters
    ----------
    path : str or Path, optional
        Default :func:`profiles_path`.

    Returns
    -------
    dict
        ``{profile: {"data": ..., "common": ..., "<notebook>": ...}}``.
    """
    with open(path or profiles_path(), encoding="utf-8") as f:
        return yaml.safe_load(f)


def repo_root(start: str | Path | None = None) -> Path:
    """The checkout's root (the folder with ``pyproject.toml`` and ``notebooks/``), else the cwd.

    Parameters
    ----------
    start : str or Path, optional
        Where to start looking upwards (default: the cwd).

    Returns
    -------
    Path
        Absolute; ``start`` itself when no parent qualifies.
    """
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").exists() and (p / "notebooks").is_dir():
            return p
    return here


def _profile(profiles: dict, profile: str) -> dict:
    if profile not in profiles:
        raise KeyError(f"unknown profile {profile!r}; profiles: {sorted(profiles)}")
    return profiles[profile]


def known_keys(notebook: str, profile: str = "cpu", profiles: dict | None = None) -> set[str]:
    """Setting names a notebook accepts under a profile (common + its own section).

    Parameters
    ----------
    notebook : str
        E.g. ``"02_balancing"``.
    profile : str, default "cpu"
    profiles : dict, optional
        :func:`load_profiles`' output (default: read the file).

    Returns
    -------
    set of str
    """
    prof = _profile(profiles or load_profiles(), profile)
    return set(prof.get("common", {})) | set(prof.get(notebook, {}) or {})


def resolve(notebook: str, profile: str = "cpu", params: dict | None = None, *,
            root: str | Path | None = None, profiles: dict | None = None) -> Params:
    """Settings for ``notebook`` (e.g. ``"02_balancing"``) under ``profile``, with ``params`` on top.

    Keys ending in ``_dir`` become absolute paths; relative ones are taken from the setting
    ``root_dir`` when the profile has one (the ``kaggle`` profile: ``/kaggle``, so one override
    moves every path into another tree), else from the repo root. ``images_dir: null`` means
    ``<data_dir>/images``.

    Parameters
    ----------
    notebook : str
    profile : str, default "cpu"
    params : dict, optional
        Overrides.
    root : str or Path, optional
        The repository root (default :func:`repo_root`).
    profiles : dict, optional
        :func:`load_profiles`' output (default: read the file).

    Returns
    -------
    Params
        With ``profile`` and ``notebook`` besides the settings.

    Raises
    ------
    KeyError
        For an override that the notebook does not know, listing the valid names (typos fail
        loudly), or an unknown profile.
    """
    profiles = profiles or load_profiles()
    prof = _profile(profiles, profile)
    merged = dict(prof.get("common", {}))
    merged.update(prof.get(notebook, {}) or {})
    unknown = set(params or {}) - set(merged)
    if unknown:
        raise KeyError(f"{notebook}: unknown setting(s) {sorted(unknown)}; valid: {sorted(merged)}")
    merged.update(params or {})
    base = repo_root(root)
    if merged.get("root_dir") is not None:   # the profile's own root for its relative paths
        rd = Path(merged["root_dir"]).expanduser()
        base = rd if rd.is_absolute() else (base / rd).resolve()
        merged["root_dir"] = str(base)
    for k, v in list(merged.items()):
        if k.endswith("_dir") and k != "root_dir" and v is not None:
            p = Path(v).expanduser()
            merged[k] = str(p if p.is_absolute() else (base / p).resolve())
    if "images_dir" in merged and merged["images_dir"] is None and merged.get("data_dir"):
        merged["images_dir"] = str(Path(merged["data_dir"]) / "images")
    return Params(profile=profile, notebook=notebook, **merged)


def data_spec(profile: str, profiles: dict | None = None) -> dict:
    """The ``data`` section of a profile.

    Parameters
    ----------
    profile : str
    profiles : dict, optional
        :func:`load_profiles`' output (default: read the file).

    Returns
    -------
    dict
        ``{"build": bool, "pairs": int, "seed": int}`` (and ``shift`` when given);
        ``{"build": False}`` when the profile has no ``data`` section.
    """
    return dict(_profile(profiles or load_profiles(), profile).get("data", {"build": False}))


def list_notebooks(notebooks_dir: str | Path) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) of a folder, in order.

    Parameters
    ----------
    notebooks_dir : str or Path

    Returns
    -------
    list of Path
    """
    return sorted(p for p in Path(notebooks_dir).iterdir() if NOTEBOOK_RE.match(p.name))
