"""The dedup on Apache Beam (DirectRunner, 2 worker processes) against the single-process nnutils.dedup."""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import pandas as pd
import pytest

from nnutils.data.images import file_digest
from nnutils.dedup import main
from nnutils.scale.beam import image_pattern, pipeline_options, read_and_decode
from nnutils.scale.dedup import find_duplicates

THRESHOLD, K = 0.7, 5


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A small embedded dataset (real photos, re-posts, broken files) and a tiny untrained-head model."""
    from nnutils.data.synth import build_dataset
    from nnutils.models.efficientnet_lite import build_efficientnet_lite0
    from nnutils.models.heads import build_embedder, build_raw_top
    root = tmp_path_factory.mktemp("beam")
    data = build_dataset(root / "data", pairs=40, seed=1, progress=False)
    (data / "images" / "not_an_image.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    trunk = build_efficientnet_lite0((96, 96, 3), weights="imagenet")
    build_embedder(trunk, build_raw_top(tuple(trunk.output.shape[1:]), "grid2")).save(root / "tiny.keras")
    return root, data / "images"


@pytest.fixture(scope="module")
def both(collection):
    """The same folder through nnutils.dedup in one process and through the Beam command (2 workers)."""
    root, images = collection
    single = find_duplicates(images, root / "tiny.keras", threshold=THRESHOLD, k=K, index="flat",
                             cache_dir=root / "cache", progress=False)
    out = root / "beam_out"
    rc = main(["--images", str(images), "--model", str(root / "tiny.keras"), "--threshold", str(THRESHOLD),
               "--k", str(K), "--index", "flat", "--cache", str(root / "cache"), "--out", str(out), "--quiet",
               "--runner", "DirectRunner", "--workers", "2"])
    assert rc == 0
    return single, out


def partition(groups: pd.DataFrame) -> set:
    return {frozenset(d.path) for _, d in groups.groupby("group")}


def test_same_groups_and_kept_files_as_single_process(both):
    single, out = both
    groups = pd.read_csv(out / "groups.csv")
    assert list(groups.columns) == list(single.groups.columns)
    assert len(single.groups) >= 4 and partition(groups) == partition(single.groups)      # same partition
    assert set(groups[groups.representative].path) == set(single.groups[single.groups.representative].path)
    merged = groups.merge(single.groups, on="path", suffixes=("_beam", "_one"))
    assert np.allclose(merged.similarity_beam, merged.similarity_one, atol=1e-5)
    rm = pd.read_csv(out / "to_remove.csv")
    assert list(rm.columns) == list(single.to_remove.columns)
    assert sorted(zip(rm.path, rm.keep)) == sorted(zip(single.to_remove.path, single.to_remove.keep))
    report = json.loads((out / "report.json").read_text())
    for key in ("images", "unreadable", "groups", "images_in_groups", "files_to_remove", "threshold", "k"):
        assert report[key] == single.report[key], key
    assert report["runner"] == "DirectRunner" and report["workers"] == 2 and report["index"] == "flat"


def test_unreadable_files_listed_with_their_reason(both):
    single, out = both
    bad = pd.read_csv(out / "unreadable.csv")
    assert list(bad.columns) == ["path", "reason"]
    names = dict(zip(bad.path.map(os.path.basename), bad.reason))
    assert names["not_an_image.png"] and "truncated" in names.values()
    assert sorted(zip(bad.path, bad.reason)) == sorted(zip(single.unreadable.path, single.unreadable.reason))


def test_embedding_shards_hold_the_single_process_vectors(both):
    import pyarrow.parquet as pq
    single, out = both
    shards = sorted((out / "embeddings").glob("part-*.parquet"))
    table = pd.concat([pq.read_table(s).to_pandas() for s in shards], ignore_index=True)
    assert list(table.columns) == ["path", "digest", "size", "vector"]
    row = {p: i for i, p in enumerate(single.paths)}
    assert sorted(table.path) == sorted(p for p, ok in zip(single.paths, single.ok) if ok)
    beam_vec = np.stack(table.vector.to_numpy()).astype(np.float32)
    one_vec = single.embeddings[[row[p] for p in table.path]]
    assert np.abs(beam_vec - one_vec).max() < 1e-5                       # the same embedder, the same vectors
    first = table.iloc[0]
    assert first.digest == file_digest(first.path) and first["size"] == os.path.getsize(first.path)
    assert (out / "index.faiss").is_file() and list((out / "knn").glob("part-*.parquet"))


def test_csv_input_in_process(collection, tmp_path):
    """A CSV listing through the in-process Beam runner (workers=1): the same groups among those files."""
    from nnutils.scale.beam import beam_find_duplicates
    root, images = collection
    files = sorted(str(p) for p in images.iterdir())[:12]
    pd.DataFrame({"path": files}).to_csv(tmp_path / "list.csv", index=False)
    res = beam_find_duplicates(tmp_path / "list.csv", root / "tiny.keras", tmp_path / "out", workers=1,
                               threshold=0.5, k=K, index="flat", cache_dir=root / "cache")
    one = find_duplicates(files, root / "tiny.keras", threshold=0.5, k=K, index="flat", cache_dir=root / "cache",
                          progress=False)
    assert res.paths == sorted(files) and partition(res.groups) == partition(one.groups)
    assert (res.labels >= 0).tolist() == one.ok[np.argsort(files)].tolist()
    assert (tmp_path / "out" / "groups.csv").is_file()


def test_runner_options_and_listing():
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    runner, opts = pipeline_options("DirectRunner", 2)
    assert isinstance(runner, FnApiRunner)                                 # never Beam's Prism-first switch
    d = opts.view_as(DirectOptions)
    assert d.direct_num_workers == 2 and d.direct_running_mode == "multi_processing"
    runner, opts = pipeline_options("FlinkRunner", 2, ["--flink_master=host:8081", "--parallelism=8"])
    assert runner == "FlinkRunner" and opts.view_as(StandardOptions).runner == "FlinkRunner"
    assert opts.get_all_options()["flink_master"] == "host:8081"
    with pytest.raises(ValueError, match="workers"):
        pipeline_options("DirectRunner", 0)
    assert image_pattern("photos/") == ("glob", "photos/**")
    assert image_pattern("gs://b/p/*.jpg") == ("glob", "gs://b/p/*.jpg")
    assert image_pattern("list.CSV") == ("csv", "list.CSV")


def test_read_and_decode_reports_reasons(tmp_path):
    from PIL import Image
    Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / "ok.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    r = read_and_decode(str(tmp_path / "ok.png"), 32)
    assert r["image"].shape == (32, 32, 3) and r["reason"] is None
    assert r["digest"] == file_digest(tmp_path / "ok.png") and r["size"] == os.path.getsize(tmp_path / "ok.png")
    assert read_and_decode(str(tmp_path / "bad.jpg"), 32)["reason"] == "truncated"
    missing = read_and_decode(str(tmp_path / "nope.jpg"), 32)
    assert missing["image"] is None and missing["reason"] == "missing"


def test_command_rejects_beam_options_without_runner(collection, capsys):
    root, images = collection
    with pytest.raises(SystemExit):
        main(["--images", str(images), "--model", str(root / "tiny.keras"), "--out", str(root / "x"),
              "--flink_master=host:8081"])
    assert "need --runner" in capsys.readouterr().err
