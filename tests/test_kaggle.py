"""Kaggle target (issue 14): the bundle, its metadata, the push commands and the `kaggle` profile in a kernel-shaped tree.

Wheels are downloaded from PyPI by ``pip download`` (as the bundle command does); set
``NNUTILS_WHEEL_CACHE`` to a folder to keep them between runs.
"""
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from packaging.requirements import Requirement

from nnutils import kaggle as K
from nnutils import profiles

ROOT = profiles.repo_root(Path(__file__).parent)
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
SECRET = "0123456789abcdef-not-a-real-key"

# the fields the kaggle CLI documents (docs/datasets_metadata.md, docs/kernels_metadata.md) ...
DATASET_FIELDS = {"title", "subtitle", "description", "id", "id_no", "licenses", "resources", "keywords",
                  "isPrivate", "expectedUpdateFrequency", "userSpecifiedSources", "collaborators", "data"}
KERNEL_FIELDS = {"id", "id_no", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu",
                 "enable_internet", "machine_shape", "dataset_sources", "competition_sources", "kernel_sources",
                 "model_sources"}
# ... and those its `kernels push` reads besides (kaggle_api_extended.py; docker_image from kaggle 1.8.0)
KERNEL_PUSH_READS = {"enable_tpu", "keywords", "docker_image", "docker_image_pinning_type"}


@pytest.fixture(scope="module")
def wheel_cache(tmp_path_factory):
    return os.environ.get("NNUTILS_WHEEL_CACHE") or str(tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="module")
def kaggle_home(tmp_path_factory):
    cfg = tmp_path_factory.mktemp("dot_kaggle")
    (cfg / "kaggle.json").write_text(json.dumps({"username": "jdoe", "key": SECRET}))
    return cfg


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, wheel_cache, kaggle_home):
    """A bundle for the running interpreter; the owner read from kaggle.json."""
    out = tmp_path_factory.mktemp("bundle") / "kaggle"
    mp = pytest.MonkeyPatch()
    mp.setenv("KAGGLE_CONFIG_DIR", str(kaggle_home))
    mp.delenv("KAGGLE_USERNAME", raising=False)
    try:
        manifest = K.build_bundle(out, python_version=PY, root=ROOT, cache=wheel_cache)
    finally:
        mp.undo()
    return out, manifest


def test_bundle_layout_and_no_secret(bundle):
    out, m = bundle
    assert m["owner"] == "jdoe" and m["dataset"] == "jdoe/nnutils-bundle"
    wheels = {p.name for p in (out / "dataset" / "wheels").glob("*.whl")}
    assert set(m["wheels"].values()) == wheels
    for name in ("nnutils", *K.IMAGE_LACKS):
        assert name in m["wheels"], name
    # never Kaggle's own TensorFlow/Keras/OpenCV
    assert not [w for w in wheels if w.lower().startswith(("tensorflow", "keras", "opencv", "numpy"))]
    assert m["wheels"]["ai-edge-litert"].startswith("ai_edge_litert-2.")
    assert sorted(p.name for p in (out / "dataset" / "notebooks").glob("*.ipynb")) == \
        [p.name for p in profiles.list_notebooks(ROOT / "notebooks")]
    for p in out.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".ipynb", ".txt", ".py"):
            assert SECRET not in p.read_text(), p


def test_metadata_has_the_documented_fields(bundle):
    out, m = bundle
    for folder in ("dataset", "weights"):
        meta = json.loads((out / folder / "dataset-metadata.json").read_text())
        assert set(meta) <= DATASET_FIELDS
        assert 6 <= len(meta["title"]) <= 50
        owner, slug = meta["id"].split("/")
        assert owner == "jdoe" and 3 <= len(slug) <= 50
        assert len(meta["licenses"]) == 1 and set(meta["licenses"][0]) == {"name"}
        for r in meta["resources"]:
            assert set(r) <= {"path", "description", "schema"}
            if folder == "dataset":
                assert (out / folder / r["path"]).is_file(), r["path"]
    kernels = sorted((out / "kernels").iterdir())
    assert [k.name for k in kernels] == [p.stem for p in profiles.list_notebooks(ROOT / "notebooks")]
    previous = None
    for kd in kernels:
        meta = json.loads((kd / "kernel-metadata.json").read_text())
        assert set(meta) <= KERNEL_FIELDS | KERNEL_PUSH_READS
        assert meta["id"] == "jdoe/" + meta["title"].lower().replace(" ", "-")   # Kaggle's slug rule
        assert meta["language"] == "python" and meta["kernel_type"] == "notebook"
        assert meta["enable_internet"] is False and meta["enable_gpu"] is True
        assert meta["dataset_sources"] == ["jdoe/nnutils-bundle", "jdoe/keras-applications-weights"]
        assert meta["competition_sources"] == ["lun-ua-csc-2023"]
        assert meta["kernel_sources"] == ([previous] if previous else [])
        assert meta["docker_image"] == K.DOCKER_IMAGE
        assert re.fullmatch(r"gcr\.io/kaggle-[a-z-]+/python@sha256:[0-9a-f]{64}", meta["docker_image"])
        assert meta["docker_image_pinning_type"] == "original"   # the CLI accepts "original" or "latest"
        nb = nbformat.read(kd / meta["code_file"], as_version=4)
        setup, params = nb.cells[0].source, next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert 'profile = "kaggle"' in params.source
        assert "'--no-index', '--no-deps'" in setup and "tensorflow==" not in setup and "opencv" not in setup
        assert ("kernel_sources" in setup) == (previous is not None)
        previous = meta["id"]


def test_python_312_wheel_set_installs_offline(tmp_path, wheel_cache):
    wheels = tmp_path / "wheels"
    got = K.download_wheels(wheels, "3.12", root=ROOT, cache=wheel_cache)
    pins = [f"{n}=={w.split('-')[1]}" for n, w in got["wheels"].items()]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-deps",
                           "--find-links", str(wheels), "--python-version", "3.12", "--implementation", "cp",
                           *(a for p in K.PLATFORMS for a in ("--platform", p)), "--only-binary=:all:",
                           "--target", str(tmp_path / "target"), *pins], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Would install" in proc.stdout and "ai-edge-litert-2." in proc.stdout


def test_a_constraint_that_cannot_be_met_fails_the_bundle(tmp_path):
    # ai-edge-litert 2.x is tagged manylinux_2_27 only: with manylinux2014 alone pip would take 1.4
    with pytest.raises(K.BundleError, match="ai-edge-litert>=2.0"):
        K.download_wheels(tmp_path, "3.12", platforms=("manylinux2014_x86_64",), cache=None,
                          required=[Requirement("ai-edge-litert>=2.0")], optional=[])
    assert not list(tmp_path.glob("ai_edge_litert-1*"))


def test_owner_needs_an_option_or_kaggle_json(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    with pytest.raises(K.BundleError, match="--owner"):
        K.kaggle_owner()
    assert K.kaggle_owner("alice") == "alice"


def _fake_kaggle(bin_dir: Path, log: Path) -> None:
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "kaggle"
    exe.write_text(f"#!{sys.executable}\nimport sys\n"
                   f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                   "if sys.argv[1:3] == ['datasets', 'status']:\n    sys.exit(1)  # not created yet\n"
                   "if sys.argv[1:3] == ['kernels', 'status']:\n    print('has status \"KernelWorkerStatus.COMPLETE\"')\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)


def test_push_runs_the_cli_in_chain_order(bundle, tmp_path, monkeypatch, kaggle_home, capsys):
    out, m = bundle
    log = tmp_path / "calls.txt"
    _fake_kaggle(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(kaggle_home))
    assert K.push(out, poll_s=0) == 0
    calls = log.read_text().splitlines()
    assert calls[0] == "datasets status jdoe/nnutils-bundle"
    assert calls[1] == f"datasets create -p {out / 'dataset'} --dir-mode zip"
    pushes = [c for c in calls if c.startswith("kernels push")]
    assert pushes == [f"kernels push -p {kd}" for kd in sorted((out / 'kernels').iterdir())]
    # each kernel waited for before the next is pushed (the next reads its output)
    for kid, kd in zip(m["kernels"], sorted((out / "kernels").iterdir())):
        i = calls.index(f"kernels status {kid}")
        assert calls[i - 1] == f"kernels push -p {kd}"


def test_push_without_credentials_prints_the_commands(bundle, tmp_path, monkeypatch, capsys):
    out, _ = bundle
    log = tmp_path / "calls.txt"
    _fake_kaggle(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "empty"))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    assert K.main(["push", "--out", str(out)]) == 3
    text = capsys.readouterr().out
    assert "no Kaggle credentials" in text
    assert f"kaggle datasets create -p {out / 'dataset'} --dir-mode zip" in text
    assert text.count("kaggle kernels push -p ") == len(list((out / "kernels").iterdir()))
    assert not log.exists()   # nothing was run


# ----------------------------------------------------------------------------- the kernel-shaped tree

SHRINK = {  # the kaggle profile's sizes, shrunk for 2 CPU cores
    "progress": False, "image_size": 64, "embedding_dim": 16, "hidden_dim": 32, "batch_size": 32, "views": 0,
    "epochs": 1, "lr_grid": [0.001], "p": 4, "k": 4, "batches_per_epoch": 2, "per_anchor": 1, "folds": 2,
    "sweep_points": 21, "error_pairs": 2, "grid_pairs": 2, "val_fraction": 0.25, "threshold_grid": [0.4, 0.95, 5],
    "gallery_groups": 2, "retrieval_k": 10, "projector_images": 40, "delf_epochs": 1, "delf_image_size": 64,
    "importance_repeats": 1, "runtime": "tflite",
}


# All ten pass here (6.3 min on 2 busy cores, 10 alone 1.7 min); CI runs the ones that carry the
# kaggle-specific paths: VGG16 from weights_dir (03), the decision (07), submission.csv (08) and
# 09/10 without ground-truth groups (submission_verified.csv). 04-06 train the same VGG16 trunk.
SUBSET = ("01", "02", "03", "07", "08", "09", "10")


def _random_vgg16_notop(path: Path) -> None:
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(64, 64, 3))
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def test_kaggle_profile_runs_in_a_kernel_shaped_tree(bundle, tmp_path):
    out, m = bundle
    tree = tmp_path / "kaggle"
    smoke = ROOT / "data" / "lun-embedded-smoke"
    if not (smoke / "train.csv").exists():
        from nnutils.data.synth import ensure_dataset
        spec = profiles.data_spec("smoke")
        ensure_dataset(smoke, pairs=spec["pairs"], seed=spec["seed"], progress=False)
    comp = tree / "input" / m["competition"]
    comp.mkdir(parents=True)
    for f in ("train.csv", "test.csv"):   # what the competition gives: no metadata, no groups, no labels
        shutil.copy2(smoke / f, comp / f)
    shutil.copytree(smoke / "images", comp / "images")
    shutil.copytree(out / "dataset", tree / "input" / "nnutils-bundle")
    weights = tree / "input" / m["weights_dataset"].split("/")[1]
    weights.mkdir()
    _random_vgg16_notop(weights / K.VGG16_FILE)
    (tree / "working").mkdir()

    # the image: this interpreter's packages visible (no .pth processed there, so not the
    # editable nnutils); the bundle installed by the kernels' own set-up cell
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    here = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "kaggle_image.pth").write_text(here + "\n")
    setup = nbformat.read(out / "kernels" / "01_eda" / "01_eda.ipynb", as_version=4).cells[0].source
    (tmp_path / "setup.py").write_text(setup.replace("/kaggle", str(tree)))
    subprocess.run([str(py), str(tmp_path / "setup.py")], check=True, cwd=tree / "working")
    proc = subprocess.run([str(py), "-c", "import nnutils, faiss; print(nnutils.__file__); print(faiss.__file__)"],
                          capture_output=True, text=True, cwd=tree / "working")
    assert proc.returncode == 0, proc.stderr[-2000:]
    where = proc.stdout.split()
    assert all(p.startswith(str(venv)) for p in where), where

    args = [str(py), "-m", "nnutils.pipeline", "--profile", "kaggle", "--no-build", "--only", *SUBSET,
            "-p", f"root_dir={tree}"]
    known = set().union(*(profiles.known_keys(nb.stem, "kaggle") for nb in profiles.list_notebooks(ROOT / "notebooks")
                          if nb.name[:2] in SUBSET))
    for k, v in SHRINK.items():
        if k in known:
            args += ["-p", f"{k}={json.dumps(v)}"]
    env = {k: v for k, v in os.environ.items() if k not in ("NNUTILS_PROFILES", "PYTHONPATH")}
    proc = subprocess.run(args, cwd=tree / "input" / "nnutils-bundle", capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    record = json.loads((tree / "working" / "run" / "pipeline.json").read_text())
    assert [s["step"][:2] for s in record["steps"]] == list(SUBSET)
    assert all(s["status"] == "ok" for s in record["steps"])
    ids = pd.read_csv(comp / "test.csv").ID
    for name in ("submission.csv", "submission_verified.csv"):
        sub = pd.read_csv(tree / "working" / name)
        assert list(sub.columns) == ["ID", "is_same"] and sorted(sub.ID) == sorted(ids)
        assert set(sub.is_same) <= {0, 1}
    settings = json.loads((tree / "working" / "run" / "metrics" / "03_siamese_bce.json").read_text())["settings"]
    assert (settings["backbone"], settings["weights"]) == ("vgg16", "imagenet")   # the .h5 from weights_dir
    shown = (tree / "working" / "run" / "notebooks" / "03_siamese_bce.ipynb").read_text()   # the cfg table
    assert str(weights) in shown and not (Path.home() / ".keras" / "models" / K.VGG16_FILE).exists()
    # 07 chose among the models and pHash (random VGG16 weights: pHash may win) and wrote the decision
    assert json.loads((tree / "working" / "run" / "decision.json").read_text())["threshold"] is not None
    assert (tree / "working" / "run" / "groups.csv").exists()   # 09 without ground-truth groups
