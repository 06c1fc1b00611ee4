"""Commands the annotation room adds to ``medcurate`` (the core CLI knows nothing of them).

They are registered through the ``medcurate.commands`` entry point group in ``pyproject.toml``;
:func:`medcurate.cli.register_plugins` adds every command of that group to the ``medcurate`` app,
under the entry point's name. A command's heavy imports stay inside it: ``medcurate --help`` loads
this module.
"""

from __future__ import annotations

from pathlib import Path

import typer


def annotate_sim(
    round_number: int = typer.Option(..., "--round", "-r", min=1, help="round N (round-N)"),
    annotators: int = typer.Option(3, "--annotators", "-k", min=1, help="simulated annotators"),
    noise: str = typer.Option("moderate", "--noise", help="none, low, moderate or high"),
    truth: Path | None = typer.Option(
        None, "--truth", help="the generator's truth folder (default: restricted/demo-truth/*)"
    ),
    seed: int = typer.Option(0, "--seed", "-s", help="seed of the annotators' noise"),
) -> None:
    """Simulated annotators sign up in Label Studio and label round N from ground truth."""
    from annotation.simulate import annotate_round  # lazy: numpy, nibabel, the round's client

    print(annotate_round(round_number, annotators, noise, truth=truth, seed=seed))
