"""Two source trees of metagrad, timed alternately on the same `metagrad bench` workloads.

A meta-step's time on a shared machine drifts by tens of percent over minutes, so two
versions measured one after the other can differ by more than any change between them; and of
two runs back to back, the first was measured up to 10% faster here whichever version it was.
This runs the bench worker of each tree in turn, `--rounds` times per approach, the order
swapped every round, and keeps each version's fastest median (the least disturbed round), then
prints the ratio.

    python benchmarks/compare_versions.py OLD_SRC NEW_SRC sinusoid:vmap,loop omniglot-5w1s:hybrid

Each tree is a `src` folder (put first on PYTHONPATH for its worker); `--lock FILE` holds an
flock around each pair of runs, so other heavy jobs that take the same lock never overlap them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys


def measure(src: str, setting: str, approach: str, repeats: int) -> float:
    spec = {"setting": setting, "approach": approach, "repeats": repeats, "warmup": 1}
    spec["check"] = False
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run(
        [sys.executable, "-m", "metagrad.bench.worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["median_s"]


@contextlib.contextmanager
def locked(path: str | None):
    if path is None:
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("workloads", nargs="+", help="SETTING:APPROACH[,APPROACH...]")
    parser.add_argument("--rounds", type=int, default=4, help="even: each order as often")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lock")
    args = parser.parse_args()
    print("| setting | approach | old s | new s | new / old |")
    print("| --- | --- | --- | --- | --- |")
    for workload in args.workloads:
        setting, _, approaches = workload.partition(":")
        for approach in approaches.split(","):
            best = {"old": float("inf"), "new": float("inf")}
            for round_ in range(args.rounds):
                with locked(args.lock):
                    for version in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
                        seconds = measure(getattr(args, version), setting, approach, args.repeats)
                        best[version] = min(best[version], seconds)
            ratio = best["new"] / best["old"]
            print(
                f"| {setting} | {approach} | {best['old']:.4g} | {best['new']:.4g} | {ratio:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
