"""A/B: one benchmark run from an earlier commit's tree and from this one, alternately, in one
run, so that a change's cost is measured side by side on the same machine at the same time.

    .venv/bin/python -m bench.ab [--baseline REF] [--runs 2] -- bench.ingest --seconds 5

Each run executes `python -m MODULE ARGS` twice: in a git worktree of REF (its own `bench/`
and `bridge/` shadowing the installed package: PYTHONPATH and the working directory), then in
this tree; each benchmark prints its own figures and the baselines it measures in that
process. With --runs 2 or more the order alternates, so that drift of the machine (the
figures of a 2-core VM move by tens of percent within minutes) falls on both. With
--same-bench, this tree's benchmark code runs against each tree's `bridge` (the baseline's
linked alone ahead of this tree on PYTHONPATH), so that a benchmark changed since the baseline
(or given options it did not have) measures both the same way.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.hostile import REPO, worktree

DEFAULT_BASELINE = "25cdde0"  # main before issue 17 (the layout, the store interface, the feed)


def run(name: str, tree: Path, argv: list[str], timeout: float,
        same_bench: Path | None = None) -> None:  # fmt: skip
    """`python -m ARGV` in `tree`; with `same_bench` (a directory holding only a link to the
    tree's `bridge`), this tree's benchmark code against the tree's package."""
    env = dict(os.environ)
    cwd = tree
    if tree != REPO and same_bench is not None:
        env["PYTHONPATH"] = f"{same_bench}{os.pathsep}{REPO}"
        cwd = same_bench  # (python -m puts the working directory first on the path)
    elif tree != REPO:  # the worktree's package and benchmarks shadow the installed ones
        env["PYTHONPATH"] = str(tree)
    print(f"\n===== {name}: {' '.join(argv)}", flush=True)
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=env, timeout=timeout,
                          check=False)  # fmt: skip
    print(f"===== {name}: exit {done.returncode} after {time.monotonic() - began:.0f} s",
          flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref to compare with")
    parser.add_argument("--runs", type=int, default=2, help="runs of each tree, alternating")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run at most")
    parser.add_argument("--same-bench", action="store_true",
                        help="run this tree's benchmark code against both trees' bridge (when"
                             " the benchmark itself changed, or takes options the baseline's"
                             " does not)")  # fmt: skip
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- MODULE [ARGS]")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not command[0].startswith("bench."):
        parser.error("give the benchmark to run after --, for example: -- bench.ingest")
    with (
        tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp,
        worktree(args.baseline, Path(tmp)) as base,
    ):
        trees = [(f"baseline {args.baseline}", base), ("this tree", REPO)]
        same = None
        if args.same_bench:  # the baseline's package alone, ahead of this tree on the path
            same = Path(tmp) / "package"
            same.mkdir()
            (same / "bridge").symlink_to(base / "bridge")
        for number in range(max(1, args.runs)):
            for name, tree in trees if number % 2 == 0 else trees[::-1]:
                run(name, tree, command, args.timeout, same)


if __name__ == "__main__":
    main()
