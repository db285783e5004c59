"""Start-up of the command line: wall time and peak memory of `speechkern --help` and `--version`.

Each command runs in a fresh interpreter, as the installed `speechkern` script runs it, alternating with the
baseline `python -c pass` (the interpreter's own start-up, measured in the same run). Prints the median and
best wall time, the CPU time and the peak resident memory of the child process (from ``wait4``), and the ratios
to the baseline. On a busy machine the wall time waits for a core; the CPU time and the ratios hold better.
Goal: `--help` and `--version` under 1 s and under 200 MB (the time judged on the median wall time, or on a busy
machine on the median CPU time, which is what a free core would take). `import torch` is timed too, for scale:
every command paid it before the heavy imports moved into the command bodies.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 7] [--no-torch]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CLI = "from speechkern_cli.main import main; main()"
CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "speechkern --help": [sys.executable, "-c", CLI, "--help"],
    "speechkern --version": [sys.executable, "-c", CLI, "--version"],
    "speechkern train --help": [sys.executable, "-c", CLI, "train", "--help"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}
GOALS = {"speechkern --help": (1.0, 200.0), "speechkern --version": (1.0, 200.0)}


def run_once(argv: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak resident memory (MB) of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {child.returncode}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0  # ru_maxrss: KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command, interleaved")
    parser.add_argument("--no-torch", action="store_true", help="skip the `import torch` reference")
    args = parser.parse_args()
    cases = {k: v for k, v in CASES.items() if not (args.no_torch and "torch" in k)}
    times: dict[str, list[float]] = {k: [] for k in cases}
    memory: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    run_once(cases["speechkern --help"])  # warm the file cache once
    for _ in range(args.repeats):
        for name, argv in cases.items():
            seconds, cpu_s, mb = run_once(argv)
            times[name].append(seconds)
            cpu[name].append(cpu_s)
            memory[name].append(mb)
    base_t = statistics.median(times["python -c pass"])
    base_m = statistics.median(memory["python -c pass"])
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.repeats} runs each")
    print("| command | median s | best s | median CPU s | peak MB | × python -c pass (time) | × (memory) | goal |")
    print("|---|---|---|---|---|---|---|---|")
    failed = []
    for name in cases:
        med, best, mb = statistics.median(times[name]), min(times[name]), max(memory[name])
        cpu_s = statistics.median(cpu[name])
        goal = ""
        if name in GOALS:
            limit_s, limit_mb = GOALS[name]
            # on a busy machine the wall time is mostly waiting for a core: judge the time on the CPU seconds
            ok = min(med, cpu_s) < limit_s and mb < limit_mb
            goal = f"< {limit_s:g} s, < {limit_mb:g} MB: {'met' if ok else 'NOT met'}"
            if not ok:
                failed.append(name)
        print(f"| {name} | {med:.3f} | {best:.3f} | {cpu_s:.3f} | {mb:.0f} | {med / base_t:.1f} | {mb / base_m:.1f} | "
              f"{goal} |")  # fmt: skip
    if failed:
        raise SystemExit(f"goal not met: {', '.join(failed)}")


if __name__ == "__main__":
    main()
