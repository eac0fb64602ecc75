"""CSV validation: every malformed input fails with the file, the line and the problem named."""
import pandas as pd
import pytest

from nnutils.data.pairs import PairsCSVError, drop_unreadable, read_pairs, unreadable_reasons


def write(tmp_path, text, name="pairs.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_reads_valid_train_and_test(tmp_path):
    tr = read_pairs(write(tmp_path, "image_url1,image_url2,is_same\na.jpg,b.jpg,1\nc.jpg, d.jpg ,0\n"))
    assert list(tr.columns) == ["image_url1", "image_url2", "is_same"]
    assert tr.is_same.tolist() == [1, 0] and tr.is_same.dtype == "int64"
    assert tr.image_url2.tolist() == ["b.jpg", "d.jpg"]  # whitespace stripped
    te = read_pairs(write(tmp_path, "ID,image_url1,image_url2\n0,a.jpg,b.jpg\n1,https://x/y.jpg,c.png\n", "t.csv"))
    assert te.ID.tolist() == [0, 1]


def test_auto_detects_kind(tmp_path):
    assert "ID" in read_pairs(write(tmp_path, "ID,image_url1,image_url2\n7,a,b\n"), "auto")


@pytest.mark.parametrize("text, kind, line, fragment", [
    ("", "train", None, "empty"),
    ("   \n\n", "train", None, "empty"),
    ("image_url1,is_same\na.jpg,1\n", "train", 1, "missing column(s) ['image_url2']"),
    ("image_url1,image_url2,is_same\n", "train", None, "no data rows"),
    ("image_url1,image_url2,is_same\na,b,1\na,,0\n", "train", 3, "empty or NaN value in column 'image_url2'"),
    ("image_url1,image_url2,is_same\na,b,1\nNaN,c,0\n", "train", 3, "empty or NaN"),
    ("image_url1,image_url2,is_same\na,b,1\nc,d,2\n", "train", 3, "is_same must be 0 or 1, found '2'"),
    ("image_url1,image_url2,is_same\na,b,yes\n", "train", 2, "found 'yes'"),
    ("ID,image_url1,image_url2\n0,a,b\n1,c,d\n0,e,f\n", "test", [2, 4], "duplicate ID 0"),
    ("ID,image_url1,image_url2\nx1,a,b\n", "test", 2, "ID must be an integer"),
    ("ID,is_same\n0,1\n1,\n", "submission", 3, "empty or NaN value in column 'is_same'"),
])
def test_malformed_csv_names_file_line_and_problem(tmp_path, text, kind, line, fragment):
    p = write(tmp_path, text)
    with pytest.raises(PairsCSVError) as ei:
        read_pairs(p, kind)
    err = ei.value
    assert str(p) in str(err) and fragment in str(err)
    assert err.line == line


def test_missing_file_and_unknown_header(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such pairs CSV"):
        read_pairs(tmp_path / "nope.csv")
    with pytest.raises(PairsCSVError, match="unrecognised header"):
        read_pairs(write(tmp_path, "foo,bar\n1,2\n"))


def test_many_bad_rows_are_listed_briefly(tmp_path):
    rows = "".join(f"a{i},b{i},3\n" for i in range(8))
    with pytest.raises(PairsCSVError, match=r"lines 2, 3, 4, 5, 6 \(\+3 more\)"):
        read_pairs(write(tmp_path, "image_url1,image_url2,is_same\n" + rows))


def test_unreadable_policy_drops_and_explains():
    pairs = pd.DataFrame({"image_url1": ["a", "b", "c"], "image_url2": ["b", "x", "y"], "is_same": [1, 0, 1]})
    status = pd.DataFrame({"readable": [True, True, True, False, False],
                           "reason": [None, None, None, "truncated", "missing"]},
                          index=["a", "b", "c", "x", "y"])
    reasons = unreadable_reasons(pairs, status)
    assert reasons.tolist() == ["", "image2 truncated", "image2 missing"]
    kept, dropped = drop_unreadable(pairs, status)
    assert kept.image_url1.tolist() == ["a"] and dropped.reason.tolist() == ["image2 truncated", "image2 missing"]
