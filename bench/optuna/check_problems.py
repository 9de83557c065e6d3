"""Checks the Rust port of the problem suite (benches/samplers.rs, `problems` command)
against common.py (a verbatim copy of the reference problems.py), value by value.

Bit-for-bit on Python <= 3.11, whose sum() of floats is a plain left-to-right sum as in the
port; Python 3.12 made sum() compensated, so there a difference of a few ulps is allowed and
reported. Exit status 1 on any mismatch beyond that.

Usage: check_problems.py RUST_PROBLEMS.json
"""
import json
import math
import sys

from common import ST_FSTAR_PER_DIM, continuous_problems, gait_objective, mixed_objective


def ulps(a, b):
    if a == b:
        return 0
    return abs(a - b) / math.ulp(max(abs(a), abs(b)))


def main():
    rows = json.load(open(sys.argv[1]))["rows"]
    exact = sys.version_info < (3, 12)
    tol = 0 if exact else 8
    worst, bad, n = 0.0, [], 0
    for r in rows:
        if r["problem"] == "mixed":
            want = mixed_objective(r["x"], r["lr"], r["k1"], r["k2"], r["c"])
        elif r["problem"] == "gait_mixed":
            want = gait_objective(r["freq"], r["amp"], r["duty"], r["gain"], r["lag"], r["gait"])
        else:
            f, _, _, f_star = continuous_problems(r["d"])[r["problem"]]
            if "f_star" in r:
                want, got = f_star, r["f_star"]
                n += 1
                if ulps(got, want) > tol:
                    bad.append((r, want))
                continue
            want = f(r["x"])
        got = r["value"]
        n += 1
        u = ulps(got, want)
        worst = max(worst, u)
        if u > tol:
            bad.append((r, want))
    for r, want in bad[:10]:
        print(f"MISMATCH {r['problem']}: rust {r.get('value', r.get('f_star'))!r} python {want!r} at {r.get('x')}")
    mode = "bit for bit" if exact else f"within {tol} ulps (Python {sys.version.split()[0]}: compensated sum())"
    if bad:
        print(f"problem suite check FAILED: {len(bad)} of {n} values differ ({mode} expected)")
        sys.exit(1)
    print(f"problem suite check: {n} values of the Rust port equal problems.py's {mode}"
          f" (largest difference {worst:g} ulp; ST f*/dim {ST_FSTAR_PER_DIM!r})")


if __name__ == "__main__":
    main()
