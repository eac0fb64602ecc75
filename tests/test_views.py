"""Looking at a collection: the embedding-projector export and the interactive comparison."""
import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nnutils.views.projector import export_projector, make_sprite
from nnutils.views.widgets import Comparer, compare_widget


@pytest.fixture()
def images(tmp_path):
    paths = []
    for i, colour in enumerate([(255, 0, 0), (250, 5, 0), (0, 0, 255), (0, 255, 0)]):
        p = tmp_path / f"im{i}.png"
        Image.new("RGB", (40 + 10 * i, 30), colour).save(p)
        paths.append(str(p))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    return paths + [str(bad)]


def test_sprite_tiles_row_by_row_and_greys_unreadable(images):
    s = make_sprite(images, thumb=8)
    assert s.shape == (24, 24, 3) and s.dtype == np.uint8             # ceil(sqrt(5)) = 3 tiles a side
    assert tuple(s[4, 4]) == (255, 0, 0) and tuple(s[4, 20]) == (0, 0, 255)   # tile 0 and tile 2 (first row)
    assert tuple(s[12, 12]) == (128, 128, 128)                         # tile 4: the broken file
    with pytest.raises(ValueError, match="do not fit"):
        make_sprite([None] * 20000, thumb=64)


def test_projector_files(images, tmp_path):
    emb = np.eye(5, 3, dtype=np.float32)
    emb[4] = np.nan                                                    # the unreadable image
    labels = pd.DataFrame({"group": [0, 0, 1, 2, 3], "kind": ["a\tb", "x", "y", "z", "w"]})
    out = export_projector(tmp_path / "proj", emb, images, labels, thumb=16)
    vec = np.loadtxt(out / "embeddings.tsv", delimiter="\t")
    assert vec.shape == (4, 3)
    meta = pd.read_csv(out / "metadata.tsv", sep="\t")
    assert list(meta.columns) == ["file", "group", "kind"] and len(meta) == 4 and meta.kind[0] == "a b"
    with Image.open(out / "sprite.png") as im:
        assert im.size == (32, 32)
    cfg = (out / "projector_config.pbtxt").read_text()
    assert 'tensor_path: "embeddings.tsv"' in cfg and "single_image_dim: 16" in cfg and "sprite.png" in cfg
    with pytest.raises(ValueError, match="rows"):
        export_projector(tmp_path / "p2", emb, images, labels.head(2))
    # one label column: no header row (the projector's rule)
    out = export_projector(tmp_path / "p3", emb[:2], images[:2], thumb=8)
    assert (out / "metadata.tsv").read_text().splitlines() == ["im0.png", "im1.png"]


class FakeEmbedder:
    """Embeds by the file's mean colour (unit vector): same colour = same photo."""

    def embed_paths(self, paths, progress=False, **kw):
        out, ok = [], []
        for p in paths:
            try:
                v = np.asarray(Image.open(p).convert("RGB"), np.float32).mean((0, 1)) + 1.0
                out.append(v / np.linalg.norm(v))
                ok.append(True)
            except Exception:
                out.append(np.full(3, np.nan, np.float32))
                ok.append(False)
        return np.array(out, np.float32), np.array(ok)


def test_comparer_similarity_decision_and_neighbours(images, tmp_path):
    emb, ok = FakeEmbedder().embed_paths(images)
    cmp = Comparer(FakeEmbedder(), images, emb, ok, threshold=0.99, k=2)
    r = cmp.compare(images[0], images[1])
    assert r["similarity"] == pytest.approx(float(emb[0] @ emb[1])) and r["same"] == 1
    assert r["neighbours1"].path[0] == images[1] and len(r["neighbours1"]) == 2
    assert images[0] not in set(r["neighbours1"].path)                 # an image is not its own neighbour
    assert cmp.compare(images[0], images[2])["same"] == 0
    # an image outside the collection (an upload) is embedded on the spot
    up = tmp_path / "upload.png"
    Image.new("RGB", (20, 20), (254, 1, 0)).save(up)
    r = cmp.compare(str(up), images[0])
    assert r["same"] == 1 and r["neighbours1"].path[0] in images[:2]
    # unreadable: NaN similarity, 0 by the pairs policy, no exception
    r = cmp.compare(images[4], images[0])
    assert np.isnan(r["similarity"]) and r["same"] == 0 and len(r["neighbours1"]) == 0
    fig = cmp.figure(images[0], images[4])
    assert "unreadable" in fig._suptitle.get_text()


def test_compare_widget_builds_and_redraws(images):
    import datetime
    import io

    import ipywidgets as W
    emb, ok = FakeEmbedder().embed_paths(images)
    cmp = Comparer(FakeEmbedder(), images, emb, ok, threshold=0.99, k=2)
    drawn = []                                                         # (path1, path2, verdict title) per redraw
    real_figure = cmp.figure

    def recording_figure(path1, path2, names=None):
        fig = real_figure(path1, path2, names)
        drawn.append((path1, path2, fig._suptitle.get_text()))
        return fig

    cmp.figure = recording_figure
    box = compare_widget(cmp)
    assert isinstance(box, W.VBox) and len(box.children) == 3
    out = box.children[2]
    assert [d[:2] for d in drawn] == [(images[0], images[1])] and "SAME photo (1)" in drawn[0][2]
    # the figure itself is displayed (outside IPython only its text repr is recorded)
    assert len(out.outputs) == 1 and out.outputs[0]["data"]["text/plain"].startswith("<Figure size")
    pick = box.children[1].children[0]                                 # image 2's dropdown
    pick.value = images[2]
    assert [d[:2] for d in drawn] == [(images[0], images[1]), (images[0], images[2])]
    assert "different (0)" in drawn[1][2]
    assert len(out.outputs) == 1                                       # the figure is replaced, not appended
    # an upload on side 1 (blue, like images[2]) is written to a file and compared
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (0, 0, 250)).save(buf, "PNG")
    upload = box.children[0].children[1]
    upload.value = ({"name": "mine.png", "type": "image/png", "size": len(buf.getvalue()),
                     "content": memoryview(buf.getvalue()),
                     "last_modified": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)},)
    assert len(drawn) == 3 and drawn[2][1] == images[2] and drawn[2][0].endswith("0_mine.png")
    with Image.open(drawn[2][0]) as written:
        assert written.convert("RGB").getpixel((0, 0)) == (0, 0, 250)
    assert "SAME photo (1)" in drawn[2][2]
    assert len(out.outputs) == 1
