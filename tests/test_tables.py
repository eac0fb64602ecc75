"""The side-table readers on a hand-written embedded-data folder and on a real-data-like folder."""
import numpy as np
import pandas as pd
import pytest

from nnutils.data import tables

META = """split,row,image_url1,image_url2,is_same,distortion,negative_kind,photo1,photo2,base1,base2,broken1,broken2
train,0,a.jpg,b.jpg,1,jpeg,,p1,p1,p1#0,p1#0,,
train,1,a.jpg,c.jpg,0,,other_crop,p1,p1,p1#0,p1#1,,
train,2,d.jpg,e.jpg,0,,random,p2,p3,p2#0,p3#0,truncated,
train,3,d.jpg,f.jpg,0,,night_shot,p2,p2,p2#0,p2#1,,
test,0,g.jpg,h.jpg,0,,same_scene,p4,p4,p4#0,p4#1,,
test,1,g.jpg,i.jpg,1,crop,,p4,p4,p4#0,p4#0,,
test,2,j.jpg,k.jpg,0,,random,p5,p6,p5#0,p6#0,,
"""
IMAGES = """file,photo_id,base_id,shoot,role,distortion,format,mode,width,height,bytes,detail,broken,split
a.jpg,p1,p1#0,s1,ref,reference,JPEG,RGB,10,10,100,,,train
b.jpg,p1,p1#0,s1,copy,jpeg,JPEG,RGB,10,10,90,,,train
c.jpg,p1,p1#1,s1,ref,reference,JPEG,RGB,10,10,80,,,train
g.jpg,p4,p4#0,s4,ref,reference,JPEG,RGB,10,10,70,,,test
i.jpg,p4,p4#0,s4,copy,crop,JPEG,RGB,8,8,60,,,test
"""
LABELS = "ID,is_same\n0,0\n1,1\n2,0\n"


@pytest.fixture
def embedded(tmp_path):
    (tmp_path / "metadata.csv").write_text(META)
    (tmp_path / "images.csv").write_text(IMAGES)
    (tmp_path / "test_labels.csv").write_text(LABELS)
    return tmp_path


@pytest.fixture
def real(tmp_path):
    """Real competition data: the LUN CSVs, no side tables, no test labels."""
    (tmp_path / "train.csv").write_text("image_url1,image_url2,is_same\na.jpg,b.jpg,1\n")
    (tmp_path / "test.csv").write_text("ID,image_url1,image_url2\n0,g.jpg,h.jpg\n")
    return tmp_path


def test_read_pair_table_and_split(embedded):
    meta = tables.read_pair_table(embedded)
    assert len(meta) == 7 and meta.negative_kind.tolist()[:2] == ["", "other_crop"]   # empty, not NaN
    assert meta.broken1.tolist()[2] == "truncated" and meta.broken2.tolist()[2] == ""
    test = tables.read_pair_table(embedded, "test")
    assert test.row.tolist() == [0, 1, 2] and list(test.index) == [0, 1, 2]
    assert tables.read_pair_table(embedded, "val").empty


def test_read_image_table_is_indexed_by_file(embedded):
    im = tables.read_image_table(embedded)
    assert im.index.name == "file" and im.loc["i.jpg", "role"] == "copy" and im.loc["a.jpg", "broken"] == ""


def test_hard_negatives_are_every_kind_but_random_and_empty(embedded):
    kinds = ["", "random", "other_crop", "same_scene", "similar_colour", "night_shot", None, np.nan]
    assert tables.is_hard_negative(kinds).tolist() == [False, False, True, True, True, True, False, False]
    assert tables.is_hard_negative("night_shot") is True and tables.is_hard_negative("random") is False
    assert tables.is_hard_negative("") is False and tables.is_hard_negative(None) is False
    # a kind the current builder never writes counts automatically
    assert tables.hard_negative_kinds(tables.read_pair_table(embedded)) == ["night_shot", "other_crop", "same_scene"]
    assert tables.hard_negative_kinds(["random", ""]) == []
    assert tables.hard_negative_kinds(pd.DataFrame({"is_same": [0]})) == []


def test_pair_kinds_by_urls_keeps_rows_and_order(embedded):
    pairs = pd.DataFrame({"image_url1": ["d.jpg", "a.jpg", "x.jpg", "a.jpg"],
                          "image_url2": ["f.jpg", "b.jpg", "y.jpg", "c.jpg"], "is_same": [0, 1, 0, 0],
                          "negative_kind": ["stale"] * 4}, index=[7, 8, 9, 10])
    out = tables.pair_kinds(embedded, pairs, "train")
    assert out.negative_kind.tolist() == ["night_shot", "", "", "other_crop"]   # the stale column is replaced
    assert out.distortion.tolist() == ["", "jpeg", "", ""]
    assert out.image_url1.tolist() == pairs.image_url1.tolist() and out.is_same.tolist() == [0, 1, 0, 0]
    # the pair g/h exists only in the test split
    gh = pd.DataFrame({"image_url1": ["g.jpg"], "image_url2": ["h.jpg"]})
    assert tables.pair_kinds(embedded, gh, "train").negative_kind.tolist() == [""]
    assert tables.pair_kinds(embedded, gh, "test").negative_kind.tolist() == ["same_scene"]
    assert tables.pair_kinds(embedded, gh, None).negative_kind.tolist() == ["same_scene"]


def test_test_kinds_and_labels_by_id(embedded):
    k = tables.test_kinds(embedded, [2, 0, 1, 99])
    assert k.negative_kind.tolist() == ["random", "same_scene", "", ""]
    assert k.distortion.tolist() == ["", "", "crop", ""] and list(k.index) == [0, 1, 2, 3]
    y = tables.read_test_labels(embedded, [2, 1, 0, 1])
    assert y.tolist() == [0, 1, 0, 1] and y.dtype == np.int64
    with pytest.raises(KeyError, match="no label for 1 of 2"):
        tables.read_test_labels(embedded, [0, 5])


def test_image_column_and_true_groups(embedded):
    paths = [str(embedded / "images" / "a.jpg"), "elsewhere/i.jpg", "unknown.png"]
    assert tables.image_column(embedded, paths, "split", default="train").tolist() == ["train", "test", "train"]
    assert tables.image_column(embedded, paths, "role", default="").tolist() == ["ref", "copy", ""]
    assert tables.image_column(embedded, paths, "photo_id").tolist() == ["p1", "p4", None]
    assert tables.image_column(embedded, paths, "no_such_column") is None
    assert tables.true_groups(embedded, paths).tolist() == ["p1#0", "p4#0", "unknown.png"]   # unknown: own group


def test_real_data_folder_has_no_side_tables(real):
    assert tables.read_pair_table(real) is None and tables.read_pair_table(real, "test") is None
    assert tables.read_image_table(real) is None
    assert tables.read_test_labels(real, [0]) is None
    assert tables.true_groups(real, ["a.jpg"]) is None
    assert tables.image_column(real, ["a.jpg"], "split", default="train") is None
    k = tables.test_kinds(real, [0, 1])
    assert k.to_dict("list") == {"distortion": ["", ""], "negative_kind": ["", ""]}
    pairs = pd.DataFrame({"image_url1": ["a.jpg"], "image_url2": ["b.jpg"], "is_same": [1]})
    assert tables.pair_kinds(real, pairs).to_dict("list") == {
        "image_url1": ["a.jpg"], "image_url2": ["b.jpg"], "is_same": [1], "distortion": [""], "negative_kind": [""]}


def test_images_table_without_base_id_is_no_truth(tmp_path):
    (tmp_path / "images.csv").write_text("file,split\na.jpg,train\n")
    assert tables.true_groups(tmp_path, ["a.jpg"]) is None
    assert tables.image_column(tmp_path, ["a.jpg"], "split").tolist() == ["train"]
    (tmp_path / "test_labels.csv").write_text("ID,label\n0,1\n")
    with pytest.raises(ValueError, match="ID and is_same"):
        tables.read_test_labels(tmp_path, [0])
