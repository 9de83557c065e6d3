#!/usr/bin/env bash
# The sampler benchmark: gaittune's samplers and Optuna 5.0's on the same problems, in one
# run, printed side by side; every figure goes to bench/results.json. See bench/README.md.
#
#   bench/run.sh            full run   (~10-15 min on 2 cores)
#   bench/run.sh --quick    smoke test (~2 min on 2 cores, plus the venv's first install)
#
# Options: --quick, --jobs N (parallel workers for the efficiency runs; default 2),
#          --skip-optuna (gaittune side only; the tables then have no Optuna column).
# The timing runs (overhead) run one at a time, alone: do not run other work meanwhile.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

MODE=full
JOBS=2
OPTUNA=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --jobs) JOBS="${2:?--jobs needs a number}"; shift ;;
        --skip-optuna) OPTUNA=0 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "bench/run.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$MODE" = quick ]; then
    N_MAX=1000 REPS=1 SEEDS=8 SIM_SEEDS=10
else
    N_MAX=2000 REPS=3 SEEDS=30 SIM_SEEDS=10
fi
TRIALS=200 SIM_TRIALS=100

OUT=bench/out
VENV=bench/.venv
PY="$VENV/bin/python"
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/problems_check.txt

stamp() { date +%s; }
T_START=$(stamp)
phase() { printf '\n=== %s (%d s)\n' "$*" "$(( $(stamp) - T_START ))" >&2; }

# --- the Python side: a venv of its own, installed once (reinstalled when requirements change)
phase "Python venv ($VENV)"
if [ -x "$PY" ] && cmp -s bench/requirements.txt "$VENV/.installed-requirements.txt"; then
    echo "venv present, requirements unchanged: skipping install" >&2
else
    command -v python3 >/dev/null || { echo "bench/run.sh: python3 not found; install Python 3.9+ with its venv module" >&2; exit 1; }
    python3 -m venv "$VENV" || { echo "bench/run.sh: 'python3 -m venv' failed; on Debian/Ubuntu install python3-venv" >&2; exit 1; }
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -r bench/requirements.txt
    cp bench/requirements.txt "$VENV/.installed-requirements.txt"
fi
"$PY" -c 'import optuna, cmaes, numpy, scipy, sys; print(f"python {sys.version.split()[0]}, optuna {optuna.__version__}, cmaes {cmaes.__version__}, numpy {numpy.__version__}, scipy {scipy.__version__}")' >&2

# --- the Rust side: build once, then call the binary directly
phase "building benches/samplers.rs (release)"
cargo bench --bench samplers --no-run >&2
BIN=$(cargo bench --bench samplers --no-run --message-format=json 2>/dev/null \
    | "$PY" -c 'import json,sys
exe=[m["executable"] for m in map(json.loads,sys.stdin) if m.get("reason")=="compiler-artifact" and m.get("target",{}).get("name")=="samplers" and m.get("executable")]
print(exe[-1] if exe else "")')
[ -x "$BIN" ] || { echo "bench/run.sh: could not find the built samplers bench binary" >&2; exit 1; }
echo "sampler kinds in this build: $("$BIN" kinds | tr '\n' ' ')" >&2

phase "problem suite: Rust port vs problems.py"
"$BIN" problems --out "$OUT/problems.json"
(cd bench/optuna && "../../$PY" check_problems.py "../../$OUT/problems.json") | tee "$OUT/problems_check.txt" >&2

# --- timing, one process at a time
if [ "$OPTUNA" = 1 ]; then
    phase "Optuna overhead: n up to $N_MAX, $REPS rep(s), d = 8, 20"
    (cd bench/optuna && "../../$PY" overhead.py --out "../../$OUT/overhead_optuna.json" \
        --n-max "$N_MAX" --reps "$REPS" --dims 8,20)
fi
phase "gaittune overhead: n up to $N_MAX, $REPS rep(s), d = 8, 20"
"$BIN" overhead --out "$OUT/overhead_gaittune.json" --n-max "$N_MAX" --reps "$REPS" --dims 8,20

# --- sample efficiency and the simulated robot (parallel workers)
if [ "$OPTUNA" = 1 ]; then
    phase "Optuna efficiency: $SEEDS seeds x 9 problems, $TRIALS trials, $JOBS workers"
    (cd bench/optuna && "../../$PY" efficiency.py --out "../../$OUT/efficiency_optuna.json" \
        --seeds "$SEEDS" --trials "$TRIALS" --workers "$JOBS")
fi
phase "gaittune efficiency: $SEEDS seeds x 9 problems, $TRIALS trials, $JOBS workers"
"$BIN" efficiency --out "$OUT/efficiency_gaittune.json" --seeds "$SEEDS" --trials "$TRIALS" --jobs "$JOBS"

phase "gaittune on the simulated robot: $SIM_SEEDS seeds x $SIM_TRIALS trials"
"$BIN" sim --out "$OUT/sim_gaittune.json" --seeds "$SIM_SEEDS" --trials "$SIM_TRIALS" --jobs "$JOBS" \
    --config configs/sim-quadruped.toml

phase "report"
"$PY" bench/report.py --dir "$OUT" --out bench/results.json --mode "$MODE"
echo "total $(( $(stamp) - T_START )) s" >&2
