"""Time the ``annotation_model`` stage (round 1: intensity proposal; round 2: the UNet) against
the code it replaced, in one process on the same data. Prints figures; asserts nothing.

    .venv/bin/python bench/annotation_model.py --home .medcurate          # a finished demo home
    .venv/bin/python bench/annotation_model.py --home H --rounds 1 --baseline none
    .venv/bin/python bench/annotation_model.py --home H --incremental   # round 3 warm vs fresh

The home needs ``volumes/`` (volumes.parquet and the NIfTI files) and, for round 2,
``labels/labels.parquet`` with round-1 labels. Nothing is written there: each run works in a
temporary home whose ``volumes/`` and ``labels/`` link to the given ones. The baseline is
``annotation/proposal.py`` and ``annotation/model.py`` as of ``--baseline`` (a git revision;
default: the commit before issue 16's changes), loaded from git. CPU seconds are printed beside
wall seconds: on a shared machine they say more. torch and MONAI are imported
before any timing, so neither path pays for that (in a fresh Dagster step process it costs
several seconds, most of it compiling bytecode when the venv has none).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotation import model as new_model  # noqa: E402
from annotation import proposal as new_proposal  # noqa: E402
from medcurate.config import Zones  # noqa: E402

BASELINE = "51665e5"  # the last commit before issue 16's annotation_model work


def _module_from_git(rev: str, path: str, name: str) -> types.ModuleType:
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up by name
    exec(compile(src, f"{rev}:{path}", "exec"), mod.__dict__)
    return mod


def baseline(rev: str) -> types.ModuleType:
    """The old model module, wired to the old proposal (it imports the new one by name)."""
    old_prop = _module_from_git(rev, "annotation/proposal.py", "bench_old_proposal")
    old = _module_from_git(rev, "annotation/model.py", "bench_old_model")
    for name in ("propose", "ProposalConfig", "PROPOSAL_VERSION", "proposal_probability"):
        setattr(old, name, getattr(old_prop, name))
    return old


def scratch_home(home: Path, tmp: Path) -> Zones:
    (tmp / "volumes").symlink_to((home / "volumes").resolve(), target_is_directory=True)
    if (home / "labels").exists():
        (tmp / "labels").symlink_to((home / "labels").resolve(), target_is_directory=True)
    return Zones(tmp)


def run_round(mod: Any, home: Path, rnd: str, timers: dict[str, float]) -> Any:
    """``run_annotation_model`` of ``mod`` in a scratch home; training time recorded apart."""
    real_train = mod.train

    def timed_train(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return real_train(*a, **k)
        finally:
            timers["train"] = timers.get("train", 0.0) + time.perf_counter() - t

    mod.train = timed_train
    try:
        with tempfile.TemporaryDirectory(prefix="bench-annotation-model-") as tmp:
            z = scratch_home(home, Path(tmp))
            t, c = time.perf_counter(), time.process_time()
            outcome = mod.run_annotation_model(z, rnd)
            timers["total"] = time.perf_counter() - t
            timers["cpu"] = time.process_time() - c
            return outcome
    finally:
        mod.train = real_train


def incremental(home: Path) -> None:
    """Round 3 warm-started from round 2's model against round 3 from scratch, in one scratch
    home (the home's labels must include round 2's, as a finished demo's do)."""
    with tempfile.TemporaryDirectory(prefix="bench-annotation-model-") as tmp:
        z = scratch_home(home, Path(tmp))
        t = time.perf_counter()
        o2 = new_model.run_annotation_model(z, "round-2")
        print(f"round-2 (fresh): {time.perf_counter() - t:.1f} s, {o2.epochs} epochs")
        timed: dict[str, float] = {}
        for label in ("warm", "fresh"):
            if label == "fresh":
                z.round_model_file("round-2").unlink()  # no parent: from scratch
            t, c = time.perf_counter(), time.process_time()
            o3 = new_model.run_annotation_model(z, "round-3")
            timed[label] = time.process_time() - c
            print(
                f"round-3 {label}: {time.perf_counter() - t:.1f} s wall, {timed[label]:.1f} s CPU, "
                f"{o3.epochs} epochs, {o3.new_slices} new slices, val Dice {o3.val_dice}; "
                f"{o3.warm_start}"
            )
        print(f"round-3: warm start {timed['fresh'] / max(timed['warm'], 1e-9):.1f}x less CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, required=True, help="a home with volumes/ (and labels/)")
    ap.add_argument("--rounds", default="1,2", help="which rounds to time, e.g. 1 or 1,2")
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the old code, or none")
    ap.add_argument("--incremental", action="store_true", help="round 3: warm vs fresh")
    args = ap.parse_args()

    # import costs out of every timing below
    import monai.losses
    import monai.networks.nets
    import torch

    del monai, torch

    if args.incremental:
        incremental(args.home)
        return
    paths: list[tuple[str, Any]] = [("new", new_model)]
    if args.baseline != "none":
        paths.insert(0, ("old", baseline(args.baseline)))
    import pandas as pd

    n_vol = len(pd.read_parquet(args.home / "volumes" / "volumes.parquet"))
    print(f"proposal {new_proposal.PROPOSAL_VERSION}; {n_vol} volumes in {args.home}")
    for rnd in [f"round-{r.strip()}" for r in args.rounds.split(",") if r.strip()]:
        times: dict[str, dict[str, float]] = {}
        for label, mod in paths:
            timers: dict[str, float] = {}
            out = run_round(mod, args.home, rnd, timers)
            times[label] = timers
            extra = ""
            if out.method == "unet":
                extra = (
                    f", training {timers.get('train', 0.0):.1f} s, val Dice {out.val_dice}, "
                    f"final loss {out.final_loss}"
                )
            per = timers["total"] / max(out.scored, 1)
            print(
                f"{rnd} {label}: {timers['total']:.1f} s wall, {timers['cpu']:.1f} s CPU "
                f"({per:.2f} s per scored sample, {out.scored} scored){extra}; "
                f"{out.pre_annotations}"
            )
        if "old" in times:
            ratio = times["old"]["total"] / max(times["new"]["total"], 1e-9)
            cpu = times["old"]["cpu"] / max(times["new"]["cpu"], 1e-9)
            line = f"{rnd}: new path {ratio:.1f}x faster than old ({cpu:.1f}x less CPU)"
            if "train" in times["old"] and "train" in times["new"]:
                tr = times["old"]["train"] / max(times["new"]["train"], 1e-9)
                line += f" (training {tr:.1f}x)"
            print(line)


if __name__ == "__main__":
    main()
