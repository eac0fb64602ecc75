"""Training machinery: PK sampling, resume after a kill, tf.data image pipelines, metrics files."""
import json
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import pandas as pd
import pytest

from nnutils.train import mining, runs, session


def test_pk_indices_structure():
    groups = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])  # group 2 has a single image
    idx = mining.pk_indices(groups, p=2, k=3, n_batches=5, seed=0).reshape(5, 2, 3)
    for batch in idx:
        gs = groups[batch]
        assert all(len(set(row)) == 1 for row in gs)           # K rows of one group
        assert gs[0, 0] != gs[1, 0]                            # P distinct groups
        assert 2 not in gs                                     # singletons never drawn
    with pytest.raises(ValueError, match="at least two groups"):
        mining.pk_indices(np.array([0, 0, 1]), p=2, k=2, n_batches=1)


RESUME_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras, numpy as np
    from nnutils.train import session
    run_dir, kill_at = sys.argv[1], int(sys.argv[2])
    session.set_seed(0)
    x = np.random.default_rng(0).random((64, 4)).astype("float32"); y = x.sum(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=session.adam(0.01), loss="mse")
    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == kill_at:
                os._exit(9)  # like a kernel killed mid-training: no clean-up runs
    h = model.fit(x, y, epochs=6, batch_size=16, verbose=0,
                  callbacks=session.callbacks(run_dir, "probe", tensorboard=False) + [Kill()])
    print("EPOCHS_RUN", len(h.history["loss"]))
""")


def test_training_resumes_after_a_kill(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(RESUME_SCRIPT)
    first = subprocess.run([sys.executable, str(script), str(tmp_path), "2"], capture_output=True, text=True)
    assert first.returncode == 9, first.stderr[-2000:]
    assert (tmp_path / "checkpoints" / "probe").exists()        # the backup survived the kill
    second = subprocess.run([sys.executable, str(script), str(tmp_path), "-1"], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "EPOCHS_RUN 3" in second.stdout                     # epochs 3, 4, 5 only: it resumed
    log = pd.read_csv(tmp_path / "logs" / "probe.csv")
    assert log.epoch.tolist() == [0, 1, 2, 3, 4, 5]
    assert not (tmp_path / "checkpoints" / "probe").exists()    # backup removed once finished


def test_strategy_on_cpu_and_metrics_round_trip(tmp_path):
    s = session.get_strategy()
    assert s.num_replicas_in_sync == 1
    runs.save_metrics(tmp_path, "03_x", val={"f1": np.float32(0.91234567)}, n=np.int64(3))
    data = json.loads((tmp_path / "metrics" / "03_x.json").read_text())
    assert data == {"notebook": "03_x", "val": {"f1": 0.91235}, "n": 3}
    assert runs.read_metrics(tmp_path)["val.f1"].iloc[0] == 0.91235


def test_pk_indices_pairs_confusable_groups():
    groups = np.repeat(np.arange(10), 3)
    confusers = {0: [7], 7: [0], 3: [5], 5: [3]}

    def batches(conf):
        idx = mining.pk_indices(groups, p=4, k=2, n_batches=50, seed=1, confusers=conf).reshape(50, 4, 2)
        for batch in idx:
            assert all(len(set(groups[row])) == 1 for row in batch)   # K rows of one group
        return [[int(groups[row[0]]) for row in batch] for batch in idx]

    together = {}
    for name, conf in (("confusers", confusers), ("plain", None)):
        order = batches(conf)
        assert all(len(set(o)) == 4 for o in order)
        together[name] = sum(0 in o and 7 in o for o in order)
    # a seed with a confuser brings it along right next to it, unless the seed took the last slot
    for o in batches(confusers):
        for pos, g in enumerate(o[:-1]):
            if g in confusers:
                assert confusers[g][0] in o[max(0, pos - 1):pos + 2], o
    # measured with seed 1: 29 of 50 batches hold both 0 and 7, against 7 without confusers
    assert together["confusers"] >= 3 * together["plain"] and together["plain"] > 0


def test_a_stale_backup_of_another_model_is_not_restored(tmp_path):
    """Rerunning with other settings must start afresh, not crash restoring an old backup."""
    import keras
    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    y = x.sum(1)

    def fit(units, kill):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units), keras.layers.Dense(1)])
        model.compile(optimizer=session.adam(0.01), loss="mse")

        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if kill and epoch == 1:
                    raise KeyboardInterrupt  # interrupted: the backup stays behind

        cbs = session.callbacks(tmp_path, "run", tensorboard=False,
                                 fingerprint=session.fingerprint(model, units=units))
        return model.fit(x, y, epochs=4, verbose=0, callbacks=cbs + [Stop()])

    with pytest.raises(KeyboardInterrupt):
        fit(8, kill=True)
    assert len(list((tmp_path / "checkpoints").iterdir())) == 1
    assert len(fit(16, kill=False).history["loss"]) == 4   # other architecture: fresh start, no crash
    assert len(fit(8, kill=False).history["loss"]) == 2    # same one: resumes after epoch 1


def test_selection_split_chooses_on_validation_images_only(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir(), run.mkdir()
    pd.DataFrame({"file": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "split": ["train", "train", "train", "test"]}).to_csv(
        data / "images.csv", index=False)
    pd.DataFrame({"image_url1": ["b.jpg"], "image_url2": ["c.jpg"], "is_same": [1]}).to_csv(run / "pairs_val.csv",
                                                                                             index=False)
    part = runs.selection_split(run, data, ["/x/a.jpg", "/x/b.jpg", "/x/c.jpg", "/x/d.jpg"])
    assert part.tolist() == ["", "train", "train", "test"]      # a.jpg was trained on: in neither part
    with pytest.raises(FileNotFoundError, match="02_balancing"):
        runs.selection_split(tmp_path, data, ["/x/a.jpg"])


def test_online_mining_labels_are_copies_not_photos(tmp_path):
    """Another crop of a photo shares the split group (no leak) but not the copy group (a negative to mine)."""
    from nnutils.profiles import Params
    run, imgs = tmp_path / "run", tmp_path / "images"
    run.mkdir(), imgs.mkdir()
    urls = ["a.jpg", "a2.jpg", "crop.jpg", "b.jpg"]
    for u in urls:
        (imgs / u).write_bytes(b"x")
    pairs = pd.DataFrame({"image_url1": ["a.jpg", "a.jpg", "b.jpg"], "image_url2": ["a2.jpg", "crop.jpg", "a.jpg"],
                          "is_same": [1, 0, 0]})
    for name in ("pairs_train.csv", "pairs_val.csv", "pairs_train_balanced.csv"):
        pairs.to_csv(run / name, index=False)
    pd.DataFrame(columns=["anchor", "positive", "negative", "negative_kind"]).to_csv(run / "triplets_train.csv",
                                                                                     index=False)
    pd.DataFrame({"image_url": urls + ["unpaired.jpg"], "group": [0, 0, 0, 1, 0],
                  "copy_group": [0, 0, 1, 2, None]}).to_csv(run / "groups.csv", index=False)
    cfg = Params(run_dir=str(run), data_dir=str(tmp_path), images_dir=str(imgs))
    data = runs.load_run_data(cfg)
    assert data.groups["crop.jpg"] == data.groups["a.jpg"]             # one photo: one side of the split
    assert data.copy_groups["crop.jpg"] != data.copy_groups["a.jpg"]   # but not a copy of it
    assert data.copy_groups["a2.jpg"] == data.copy_groups["a.jpg"]
    assert data.copy_groups["unpaired.jpg"] not in set(data.copy_groups.drop("unpaired.jpg"))
    pd.DataFrame({"image_url": urls, "group": [0, 0, 0, 1]}).to_csv(run / "groups.csv", index=False)
    old = runs.load_run_data(cfg)                                       # a run folder from before the column
    assert old.copy_groups.equals(old.groups)
