#!/usr/bin/env bash
# The benchmark: gaittune's samplers and pruners next to Optuna 5.0's on the same problems,
# in one run, printed side by side, then tuning studies on the simulated robot through the
# real daemon, then a study through the fault-injecting proxy (gaittune chaos); every figure
# goes to bench/results.json. See bench/README.md.
#
#   bench/run.sh            full run   (~1 h on 2 cores: samplers 25 min, of which Optuna's GPSampler ~20 min; robot 21 min)
#   bench/run.sh --quick    smoke test (~25 min on 2 cores, plus the venv's first install)
#
# Options: --quick, --jobs N (parallel workers; default 2),
#          --only PARTS (comma-separated: samplers, pruners, robot, chaos; default all four),
#          --skip-optuna (gaittune side only; the tables then have no Optuna column).
# The timing runs (overhead) run one at a time, alone: do not run other work meanwhile.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

MODE=full
JOBS=2
OPTUNA=1
ONLY=samplers,pruners,robot,chaos
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --jobs) JOBS="${2:?--jobs needs a number}"; shift ;;
        --only) ONLY="${2:?--only needs a list: samplers,pruners,robot,chaos}"; shift ;;
        --skip-optuna) OPTUNA=0 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "bench/run.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

for part in ${ONLY//,/ }; do
    case "$part" in samplers|pruners|robot|chaos) ;; *) echo "bench/run.sh: --only: unknown part '$part' (samplers, pruners, robot, chaos)" >&2; exit 2 ;; esac
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }

if [ "$MODE" = quick ]; then
    N_MAX=1000 REPS=1 SEEDS=8 GP_SEEDS=3 LC_SEEDS=10 ROBOT_SEEDS=3 CHAOS_TRIALS=40
else
    N_MAX=2000 REPS=3 SEEDS=30 GP_SEEDS=10 LC_SEEDS=10 ROBOT_SEEDS=10 CHAOS_TRIALS=100
fi
TRIALS=200 ROBOT_TRIALS=100 SHORT_TRIALS=60

OUT=bench/out
VENV=bench/.venv
PY="$VENV/bin/python"
mkdir -p "$OUT"
# Only the parts being run are replaced; the report reads what the others left.
want samplers && rm -f "$OUT"/problems.json "$OUT"/problems_check.txt "$OUT"/overhead_*.json "$OUT"/efficiency_*.json
want pruners && rm -f "$OUT"/pruners_*.json
want robot && rm -f "$OUT"/robot.json "$OUT"/robot_short.json
want chaos && rm -f "$OUT"/chaos.json

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

# --- the Rust side: build once, then call the binaries directly
phase "building the benches (release)"
cargo bench --bench samplers --bench pruners --bench robot_studies --bench chaos --no-run >&2
bench_bin() {
    cargo bench --bench "$1" --no-run --message-format=json 2>/dev/null \
        | "$PY" -c 'import json,sys
name=sys.argv[1]
exe=[m["executable"] for m in map(json.loads,sys.stdin) if m.get("reason")=="compiler-artifact" and m.get("target",{}).get("name")==name and m.get("executable")]
print(exe[-1] if exe else "")' "$1"
}
BIN=$(bench_bin samplers) PRUNERS_BIN=$(bench_bin pruners) ROBOT_BIN=$(bench_bin robot_studies)
CHAOS_BIN=$(bench_bin chaos)
for b in "$BIN" "$PRUNERS_BIN" "$ROBOT_BIN" "$CHAOS_BIN"; do
    [ -x "$b" ] || { echo "bench/run.sh: could not find a built bench binary" >&2; exit 1; }
done
echo "sampler kinds in this build: $("$BIN" kinds | tr '\n' ' ')" >&2

if want samplers; then
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

    # --- sample efficiency (parallel workers)
    if [ "$OPTUNA" = 1 ]; then
        phase "Optuna efficiency: $SEEDS seeds x 11 problems, $TRIALS trials (gp: $GP_SEEDS seeds, 100 trials), $JOBS workers"
        # One torch thread per worker: the workers already fill the cores.
        (cd bench/optuna && OMP_NUM_THREADS=1 "../../$PY" efficiency.py --out "../../$OUT/efficiency_optuna.json" \
            --seeds "$SEEDS" --gp-seeds "$GP_SEEDS" --trials "$TRIALS" --workers "$JOBS")
    fi
    phase "gaittune efficiency: $SEEDS seeds x 11 problems, $TRIALS trials (gp: 100), $JOBS workers"
    "$BIN" efficiency --out "$OUT/efficiency_gaittune.json" --seeds "$SEEDS" --trials "$TRIALS" --jobs "$JOBS"
fi

if want pruners; then
    if [ "$OPTUNA" = 1 ]; then
        phase "Optuna pruners on the learning curve: $LC_SEEDS seeds, $JOBS workers"
        (cd bench/optuna && "../../$PY" pruners.py --out "../../$OUT/pruners_optuna.json" \
            --seeds "$LC_SEEDS" --workers "$JOBS")
    fi
    phase "gaittune pruners on the learning curve: $LC_SEEDS seeds"
    "$PRUNERS_BIN" --out "$OUT/pruners_gaittune.json" --seeds "$LC_SEEDS"
fi

if want robot; then
    phase "gaittune on the simulated robot (real daemon): $ROBOT_SEEDS seeds x $ROBOT_TRIALS trials, $JOBS at a time"
    "$ROBOT_BIN" samplers constraints pruners --seeds "$ROBOT_SEEDS" --trials "$ROBOT_TRIALS" \
        --jobs "$JOBS" --config configs/sim-quadruped.toml --out "$OUT/robot.json"
    phase "gaittune on the simulated robot, an on-robot budget: $ROBOT_SEEDS seeds x $SHORT_TRIALS trials (gp, gp with safe exploration, tpe, cmaes; gp without its safety model; sim-to-real warm start)"
    "$ROBOT_BIN" samplers constraints warmstart --seeds "$ROBOT_SEEDS" --trials "$SHORT_TRIALS" --sim-trials 200 \
        --kinds gp,gp@safe_exploration=true,tpe,cmaes --off-kinds gp \
        --jobs "$JOBS" --config configs/sim-quadruped.toml --out "$OUT/robot_short.json"
fi

if want chaos; then
    phase "gaittune chaos: $CHAOS_TRIALS trials through the fault-injecting proxy, without and with faults"
    # A daemon that does not recover is a finding, not a reason to lose the other parts' report.
    "$CHAOS_BIN" --trials "$CHAOS_TRIALS" --out "$OUT/chaos.json" \
        || echo "bench/run.sh: chaos: the daemon did not finish the study with faults, or stored what the robot did not run (see above)" >&2
fi

phase "report"
"$PY" bench/report.py --dir "$OUT" --out bench/results.json --mode "$MODE"
echo "total $(( $(stamp) - T_START )) s" >&2
