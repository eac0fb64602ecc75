"""The predict command: a real (tiny) model through TFLite, the run-folder decision, bad inputs, the cache."""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nnutils.predict import main, predict_pairs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from nnutils.efficientnet_lite import build_efficientnet_lite0
    from nnutils.models import build_embedder, build_raw_top
    root = tmp_path_factory.mktemp("predict")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    base = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(base).save(images / "a.jpg", quality=90)
    Image.fromarray(base).resize((120, 90)).save(images / "a_big.png")                  # same photo, resized
    Image.fromarray((rng.random((60, 80, 3)) * 255).astype(np.uint8)).save(images / "b.jpg")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    test = pd.DataFrame({"ID": [0, 1, 2, 3], "image_url1": ["a.jpg", "a.jpg", "b.jpg", "missing.jpg"],
                         "image_url2": ["a_big.png", "b.jpg", "broken.jpg", "a.jpg"]})
    test.to_csv(root / "test.csv", index=False)
    trunk = build_efficientnet_lite0((64, 64, 3), weights="imagenet")
    model = build_embedder(trunk, build_raw_top(tuple(trunk.output.shape[1:]), "grid2"))
    run = root / "run"
    (run / "models").mkdir(parents=True)
    model.save(run / "models" / "tiny.keras")
    (run / "decision.json").write_text(json.dumps({"model": "tiny", "model_path": str(run / "models" / "tiny.keras"),
                                                   "threshold": 0.8}))
    return root


def test_run_folder_decision_tflite_and_policy(setup, capsys):
    out = setup / "sub.csv"
    rc = main(["--pairs", str(setup / "test.csv"), "--images", str(setup / "images"), "--model", str(setup / "run"),
               "--out", str(out), "--cache-dir", str(setup / "cache"), "--scores", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["ID", "is_same"] and sub.ID.tolist() == [0, 1, 2, 3]
    assert sub.is_same.tolist()[0] == 1            # the resized copy is found
    assert sub.is_same.tolist()[1] == 0            # another photo is not
    assert sub.is_same.tolist()[2:] == [0, 0]      # unreadable pairs: 0 by policy
    report = json.loads(capsys.readouterr().out.split("wrote")[0])
    assert report["pairs_unreadable"] == 2 and report["unreadable_images"] == 2 and report["runtime"] == "tflite"
    assert report["images_embedded"] == 3 and report["ms_per_pair"] > 0
    scores = pd.read_csv(setup / "sub_scores.csv")
    assert scores.score.isna().tolist() == [False, False, True, True]


def test_second_run_reads_the_embedding_cache(setup):
    a = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=setup / "cache2", progress=False)
    b = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=setup / "cache2", progress=False)
    assert a.report["images_embedded"] == 3 and b.report["images_embedded"] == 0
    assert np.allclose(a.scores, b.scores, equal_nan=True)


def test_keras_runtime_agrees_with_tflite(setup):
    a = predict_pairs(setup / "test.csv", setup / "images", setup / "run", runtime="keras", progress=False)
    b = predict_pairs(setup / "test.csv", setup / "images", setup / "run", runtime="tflite", progress=False)
    assert np.allclose(a.scores, b.scores, atol=1e-3, equal_nan=True)


@pytest.mark.parametrize("case, fragment", [
    ("bad_csv", "line 3: ID must be an integer"),
    ("no_model", "not found"),
    ("no_images", "images folder"),
    ("no_threshold", "--threshold is required"),
    ("no_decision", "run 07_threshold_sweep first"),
])
def test_bad_inputs_exit_2_with_a_clear_message(setup, tmp_path, capsys, case, fragment):
    args = {"--pairs": str(setup / "test.csv"), "--images": str(setup / "images"), "--model": str(setup / "run"),
            "--out": str(tmp_path / "s.csv")}
    if case == "bad_csv":
        (tmp_path / "t.csv").write_text("ID,image_url1,image_url2\n0,a.jpg,b.jpg\nX,a.jpg,b.jpg\n")
        args["--pairs"] = str(tmp_path / "t.csv")
    elif case == "no_model":
        args["--model"] = str(tmp_path / "nope.keras")
    elif case == "no_images":
        args["--images"] = str(tmp_path / "no_such_folder")
    elif case == "no_threshold":
        args["--model"] = str(setup / "run" / "models" / "tiny.keras")
    elif case == "no_decision":
        args["--model"] = str(tmp_path)
    rc = main([x for kv in args.items() for x in kv] + ["--quiet", "--cache-dir", str(tmp_path / "c")])
    assert rc == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
