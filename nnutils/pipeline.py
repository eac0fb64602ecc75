"""Run the numbered notebooks end to end with papermill under a parameter profile.

    python -m nnutils.pipeline                      # cpu profile: build data if absent, run all
    python -m nnutils.pipeline --profile smoke      # minutes; what the tests run
    python -m nnutils.pipeline --only 01 02 -p val_fraction=0.3
    python -m nnutils.pipeline --list               # notebooks and their settings

Executed copies of the notebooks go to ``<run_dir>/notebooks/``; the notebooks pass their
results to each other through files in ``run_dir``. A failing cell stops the run with the
notebook, the cell and the error named, and exit code 1. ``<run_dir>/pipeline.json``
records what ran, how long each step took, and the outcome.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

from nnutils import profiles as P
from nnutils.data.photos import pool_lines
from nnutils.data.shift import ShiftConfig, ensure_shift
from nnutils.data.synth import ensure_dataset

__all__ = ["run_pipeline", "main"]


class NotebookFailed(RuntimeError):
    """A notebook failed.

    Parameters
    ----------
    notebook : str
        The notebook's file name.
    cell : int or None
        The failing cell's position in the source notebook (1-based, markdown cells
        included), or None if the kernel never ran it.
    error : str
        The error, ``"<name>: <value>"``.
    output : Path
        The executed copy of the notebook.
    """

    def __init__(self, notebook: str, cell: int | None, error: str, output: Path):
        self.notebook, self.cell, self.error, self.output = notebook, cell, error, output
        where = f"cell {cell}" if cell is not None else "start-up"
        super().__init__(f"notebook {notebook} failed at {where}: {error}\n  executed copy: {output}")


def _select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    if not only:
        return notebooks
    chosen = [nb for nb in notebooks if any(nb.name.startswith(o) or nb.stem == o for o in only)]
    unknown = [o for o in only if not any(nb.name.startswith(o) or nb.stem == o for nb in notebooks)]
    if unknown:
        raise SystemExit(f"error: no notebook matches {unknown}; notebooks: {[nb.stem for nb in notebooks]}")
    return chosen


def _report_photo_pool(data_dir: Path) -> dict:
    """Print what the embedded build's ``build_info.json`` says about its photo pool.

    Parameters
    ----------
    data_dir : pathlib.Path
        The dataset folder the data step built or reused.

    Returns
    -------
    dict
        ``photos`` (int, used by the build), ``photos_installed`` (int, found before the
        held-out pools are left out) and ``missing_photo_packages`` (list of str) for the run record;
        empty when the folder has no ``build_info.json`` with a ``photo_pool`` (a user's
        real data).
    """
    info = data_dir / "build_info.json"
    build = json.loads(info.read_text()) if info.exists() else {}
    pool = build.get("photo_pool")
    if not pool:
        return {}
    for line in pool_lines(pool):
        print(f"[pipeline] data: {line}", flush=True)
    used = build.get("counts", {}).get("photos", pool["photos"])
    if used != pool["photos"]:
        print(f"[pipeline] data: the build uses {used} of them; {pool['photos'] - used} are held out for the "
              "shifted benchmark and its sealed copy (nnutils.data.photos.HELD_OUT)", flush=True)
    return dict(photos=used, photos_installed=pool["photos"], missing_photo_packages=pool["missing"])


def run_pipeline(profile: str = "cpu", overrides: dict | None = None, only: list[str] | None = None,
                 root: str | Path | None = None, build_data: bool = True) -> dict:
    """Build the embedded data if the profile asks for it, then execute the notebooks in order.

    The profile's ``data.shift`` entry (``{build, pairs, seed, dir}``) also builds the shifted
    benchmark (:mod:`nnutils.data.shift`; ``dir`` relative to the repository root), recorded
    under the data step's ``shift`` key.

    The data step prints how many photos the build drew on and, when optional photo
    packages are missing, a ``WARNING:`` line naming them and the photos they would add.

    Parameters
    ----------
    profile : str, default "cpu"
        A profile of ``profiles.yaml`` (``smoke``, ``cpu``, ``kaggle``).
    overrides : dict, optional
        Setting → value; each notebook gets the ones it knows.
    only : list of str, optional
        Notebooks to run, by number or name; default all.
    root : str or Path, optional
        The repository root (default: found from the cwd).
    build_data : bool, default True
        Build the embedded data when the profile asks for it.

    Returns
    -------
    dict
        The run record also written to ``<run_dir>/pipeline.json``: ``profile``,
        ``overrides``, ``run_dir``, ``started``, ``finished``, ``python`` and ``steps`` (one
        dict per step, with ``seconds``).

    Raises
    ------
    KeyError
        For an override no notebook knows.
    NotebookFailed
        On the first failing cell.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    root = P.repo_root(root)
    profs = P.load_profiles()
    notebooks = _select(P.list_notebooks(root / "notebooks"), only)
    overrides = dict(overrides or {})
    known = set().union(*(P.known_keys(nb.stem, profile, profs) for nb in notebooks)) if notebooks else set()
    unknown = set(overrides) - known
    if unknown:
        raise KeyError(f"unknown setting(s) {sorted(unknown)}; notebooks here accept {sorted(known)}")
    shared = set(profs[profile].get("common", {}))
    common = P.resolve("pipeline", profile, {k: v for k, v in overrides.items() if k in shared},
                       root=root, profiles=profs)
    run_dir = Path(common.run_dir)
    progress = bool(common.get("progress", True))
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    record = dict(profile=profile, overrides=overrides, run_dir=str(run_dir), started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                  python=sys.executable, steps=[])

    def save():
        (run_dir / "pipeline.json").write_text(json.dumps(record, indent=2))

    spec = P.data_spec(profile, profs)
    if build_data and spec.get("build"):
        t = time.perf_counter()
        ensure_dataset(common.data_dir, pairs=int(spec["pairs"]), seed=int(spec["seed"]), progress=progress)
        step = dict(step="data", path=common.data_dir, seconds=round(time.perf_counter() - t, 1), status="ok")
        step.update(_report_photo_pool(Path(common.data_dir)))
        shift = spec.get("shift") or {}
        if shift.get("build"):
            # the shifted benchmark (issue 12): held-out photos, albumentations re-posts; for reporting only
            t = time.perf_counter()
            where = Path(shift["dir"]) if Path(shift["dir"]).is_absolute() else root / shift["dir"]
            ensure_shift(where, ShiftConfig(pairs=int(shift["pairs"]), seed=int(shift["seed"])))
            step["shift"] = dict(path=str(where), seconds=round(time.perf_counter() - t, 1))
            print(f"[pipeline] data: shifted benchmark {where} ({int(shift['pairs'])} pairs)", flush=True)
        record["steps"].append(step)

    # the kernel must be this interpreter (a venv's kernel.json says just "python")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of logs
    for nb in notebooks:
        params = {k: v for k, v in overrides.items() if k in P.known_keys(nb.stem, profile, profs)}
        out = run_dir / "notebooks" / nb.name
        print(f"[pipeline] {profile}: running {nb.name}", flush=True)
        t = time.perf_counter()
        step = dict(step=nb.stem, output=str(out))
        try:
            pm.execute_notebook(str(nb), str(out), parameters=dict(profile=profile, params=params),
                                cwd=str(nb.parent), kernel_name="python3", progress_bar=progress,
                                request_save_on_cell_execute=True)
        except PapermillExecutionError as e:
            # papermill inserts one "injected-parameters" cell, so the failing cell's 0-based
            # index in the executed copy is its 1-based position in the source notebook
            step.update(status="failed", seconds=round(time.perf_counter() - t, 1),
                        error=f"{e.ename}: {e.evalue}", cell=e.cell_index)
            record["steps"].append(step)
            save()
            raise NotebookFailed(nb.name, e.cell_index, f"{e.ename}: {e.evalue}", out) from None
        except Exception as e:  # kernel died, bad notebook JSON, ...
            step.update(status="failed", seconds=round(time.perf_counter() - t, 1), error=repr(e))
            record["steps"].append(step)
            save()
            raise NotebookFailed(nb.name, None, repr(e), out) from e
        step.update(status="ok", seconds=round(time.perf_counter() - t, 1))
        record["steps"].append(step)
        save()
        print(f"[pipeline] {nb.name} done in {step['seconds']} s", flush=True)
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    save()
    return record


def _parse_override(s: str) -> tuple[str, object]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected key=value, got {s!r}")
    k, v = s.split("=", 1)
    return k.strip(), yaml.safe_load(v)


def main(argv: list[str] | None = None) -> int:
    """The ``python -m nnutils.pipeline`` command.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 ok, 1 a notebook failed, 2 an unknown setting.
    """
    ap = argparse.ArgumentParser(prog="python -m nnutils.pipeline", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", help="smoke | cpu | kaggle (nnutils/profiles.yaml); default %(default)s")
    ap.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (by number or name)")
    ap.add_argument("-p", "--param", action="append", type=_parse_override, default=[], metavar="KEY=VALUE",
                    help="override a setting for every notebook that has it (repeatable)")
    ap.add_argument("--no-build", action="store_true", help="do not build the embedded data")
    ap.add_argument("--list", action="store_true", help="list notebooks and their resolved settings, run nothing")
    args = ap.parse_args(argv)
    overrides = dict(args.param)
    try:
        if args.list:
            root = P.repo_root()
            for nb in P.list_notebooks(root / "notebooks"):
                print(f"{nb.name}")
                cfg = P.resolve(nb.stem, args.profile, {k: v for k, v in overrides.items()
                                                        if k in P.known_keys(nb.stem, args.profile)})
                for k, v in cfg.items():
                    print(f"    {k} = {v!r}")
            return 0
        record = run_pipeline(args.profile, overrides, args.only, build_data=not args.no_build)
    except NotebookFailed as e:
        print(f"[pipeline] FAILED: {e}", file=sys.stderr)
        return 1
    except KeyError as e:
        print(f"[pipeline] error: {e.args[0]}", file=sys.stderr)
        return 2
    total = sum(s["seconds"] for s in record["steps"])
    print(f"[pipeline] {args.profile}: {len(record['steps'])} steps ok in {total:.0f} s; "
          f"executed notebooks in {Path(record['run_dir']) / 'notebooks'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
