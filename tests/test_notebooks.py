"""Every notebook in notebooks/ runs end to end under the smoke profile, and its outputs are sane."""
import json

import nbformat
import pandas as pd
import pytest
from PIL import Image

from nnutils import profiles
from nnutils.grouping import check_no_leak
from nnutils.pipeline import run_pipeline

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    overrides = {"data_dir": str(tmp / "data"), "run_dir": str(tmp / "run"), "eda_dir": str(tmp / "eda")}
    record = run_pipeline("smoke", overrides)
    return tmp, record


def test_all_notebooks_ran(smoke_run):
    tmp, record = smoke_run
    names = [nb.stem for nb in profiles.list_notebooks(profiles.repo_root() / "notebooks")]
    steps = [s for s in record["steps"] if s["step"] != "data"]
    assert [s["step"] for s in steps] == names
    assert all(s["status"] == "ok" for s in steps)
    for s in steps:  # executed copies exist and hold no error output
        nb = nbformat.read(s["output"], as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors


def test_eda_outputs(smoke_run):
    tmp, _ = smoke_run
    eda = tmp / "eda"
    for fig in ("class_balance", "sizes", "modes", "unreadable", "pairs_positive", "pairs_negative",
                "distortion_examples", "negative_examples"):
        with Image.open(eda / f"{fig}.png") as im:
            assert im.width > 300 and im.height > 150, fig
    summary = pd.read_csv(eda / "summary.csv").set_index("metric").value
    assert 0.25 < float(summary["train: positive rate"]) < 0.4
    assert int(summary["unreadable images"]) >= 2
    assert float(summary["train positives byte-identical (share)"]) > 0


def test_balancing_outputs(smoke_run):
    tmp, _ = smoke_run
    run = tmp / "run"
    train, val = pd.read_csv(run / "pairs_train.csv"), pd.read_csv(run / "pairs_val.csv")
    groups = pd.read_csv(run / "groups.csv", index_col="image_url").group
    check_no_leak(train, val, groups)
    bal = pd.read_csv(run / "pairs_train_balanced.csv")
    assert bal.is_same.sum() == (bal.is_same == 0).sum() == train.is_same.sum()
    trip = pd.read_csv(run / "triplets_train.csv")
    assert (trip.anchor.map(groups) != trip.negative.map(groups)).all()
    dropped = pd.read_csv(run / "dropped_pairs.csv")
    assert dropped.reason.str.contains("missing|truncated").any()
    assert dropped.reason.str.contains("crosses split").any()
    summary = json.loads((run / "split_summary.json").read_text())
    assert summary["pairs_val.csv"] == len(val)
