"""Theory against simulation for the thesis's chapter-3 model at the chapter's size (n = 1500, β = 0.2, λ = 10⁻⁵).

For each k and R: the accuracy predicted by eqs 3.21 + 3.9–3.10 as printed (with 𝒯₄ corrected), the accuracy
under the alternative reading Q = R·J* + N(0, τ²) of Theorem 1 (docs/losses-asymptotics.md, section 5), the
λ → 0⁺ minimiser theory derived here (section 6; the same at every R), and the test accuracy of the minimiser of
eq. 3.7 at each training size of ``--n``. Prints a Markdown table, the load and
the seconds taken; OMP threads are set to 1.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/asymptotics_agreement.py [--n 500,1500] [--seeds 1]
"""

from __future__ import annotations

import argparse
import os
import time

from speechkern.losses import asymptotics as asym
from speechkern.losses.asymptotics_sim import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", default="2,10,60")
    parser.add_argument("--R", default="0.5,4,32")
    parser.add_argument("--n", default="500,1500")
    parser.add_argument("--beta", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    ks = [int(v) for v in args.k.split(",")]
    Rs = tuple(float(v) for v in args.R.split(","))
    ns = [int(v) for v in args.n.split(",")]
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average, 2 cores)")
    start = time.perf_counter()
    print(
        "| k | R | theory (printed) | theory (Q = R·J*) | λ → 0⁺ theory | "
        + " | ".join(f"simulated, n = {n}" for n in ns)
        + " | printed − sim. | λ → 0⁺ − sim. (largest n) |"
    )
    print("|---:|---:|---:|---:|---:|" + "---:|" * len(ns) + "---:|---:|")
    for k in ks:
        sims = {n: simulate(asym.Problem(k=k, R=1.0, beta=args.beta), Rs, n, args.seeds) for n in ns}
        min_norm = asym.min_norm_accuracy(asym.solve_min_norm(asym.Problem(k=k, R=1.0, beta=args.beta)))
        for R in Rs:
            problem = asym.Problem(k=k, R=R, beta=args.beta)
            fp = asym.solve(problem)
            m, q = fp.overlaps()
            printed = asym.accuracy_from_overlaps(m, q, problem.sigma2, k)
            T, T2, _, T4 = asym.mp_transforms(fp.u, args.beta)
            scaled = asym.accuracy_from_overlaps(float(R * (1 - T)), float(R * R * T4 + fp.tau2 * T2), 1.0, k)
            simulated = [sum(r.accuracy for r in sims[n] if r.R == R) / args.seeds for n in ns]
            cells = " | ".join(f"{a:.3f}" for a in simulated)
            print(
                f"| {k} | {R:g} | {printed:.3f} | {scaled:.3f} | {min_norm:.3f} | {cells} | "
                f"{printed - simulated[-1]:+.3f} | {min_norm - simulated[-1]:+.3f} |"
            )
    print(f"{time.perf_counter() - start:.0f} s; load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
