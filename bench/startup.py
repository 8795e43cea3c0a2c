"""CLI start-up time: ``newsletter --help`` and ``--version`` against Python's own start-up.

    .venv/bin/python bench/startup.py              # 20 runs of each command
    .venv/bin/python bench/startup.py --runs 50
    make bench-startup

Each command is started as a fresh process, as a user starts it, and timed from spawn to exit;
the figures are the median (and the fastest) of ``--runs`` runs, interleaved so that a busy
moment on the machine spreads over all of them. In the same run, two baselines: ``python -c
pass`` (the interpreter alone) and ``python -c "import click"`` (the least a click program
costs). What ``newsletter`` adds on top of click is the figure to keep small; the goal is
``--help`` under 0.3 s on a 2-core VM. Which modules ``--help`` may not import is a test
(tests/test_cli.py), not a timing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
NEWSLETTER = BIN / "newsletter"
GOAL_SECONDS = 0.3


def commands() -> dict[str, list[str]]:
    """What is timed, by label: the two baselines, then the CLI as a user runs it."""
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import click'": [sys.executable, "-c", "import click"],
        "newsletter --version": [str(NEWSLETTER), "--version"],
        "newsletter --help": [str(NEWSLETTER), "--help"],
    }


def time_once(argv: list[str]) -> float:
    """Seconds from spawning ``argv`` to its exit; the command must succeed."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(runs: int) -> dict[str, list[float]]:
    """``runs`` timings of every command, interleaved, after one warm-up run each."""
    argvs = commands()
    for argv in argvs.values():  # warm the page cache and the bytecode caches
        time_once(argv)
    timings: dict[str, list[float]] = {label: [] for label in argvs}
    for _ in range(runs):
        for label, argv in argvs.items():
            timings[label].append(time_once(argv))
    return timings


def report(timings: dict[str, list[float]]) -> str:
    """One line per command: median, fastest, and the median over ``import click``."""
    click_median = statistics.median(timings["python -c 'import click'"])
    lines = [f"{'command':<28}{'median':>10}{'fastest':>10}{'over click':>12}"]
    for label, values in timings.items():
        median = statistics.median(values)
        lines.append(
            f"{label:<28}{median * 1000:>8.0f}ms{min(values) * 1000:>8.0f}ms"
            f"{(median - click_median) * 1000:>+10.0f}ms"
        )
    help_median = statistics.median(timings["newsletter --help"])
    verdict = "within" if help_median < GOAL_SECONDS else "OVER"
    lines.append(
        f"newsletter --help: {help_median:.3f} s, {verdict} the {GOAL_SECONDS} s goal "
        f"({len(timings['newsletter --help'])} runs)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (20)")
    args = parser.parse_args()
    if not NEWSLETTER.exists():
        sys.exit(f"{NEWSLETTER} not found: run `make .venv/.installed-stamp` first")
    print(report(measure(max(args.runs, 1))))


if __name__ == "__main__":
    main()
