"""The Optuna samplers compared with gaittune's, keyed by gaittune's sampler kind.

Each is Optuna 5.0's default configuration of that sampler, as in the reference scripts
(../shared/reference/optuna-5.0/scripts/), so a kind's figures sit next to its counterpart:
random <-> RandomSampler, tpe <-> TPESampler() (multivariate by default in 5.0),
cmaes <-> CmaEsSampler(), qmc <-> QMCSampler(scramble=True) (scrambled so the seed matters;
unscrambled Sobol would be the same sequence for every seed and a rank test over seeds
would say nothing), gp <-> GPSampler() (when torch is installed).
"""
import warnings

import optuna

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

SAMPLERS = {
    "random": lambda s: optuna.samplers.RandomSampler(seed=s),
    "tpe": lambda s: optuna.samplers.TPESampler(seed=s),
    "cmaes": lambda s: optuna.samplers.CmaEsSampler(seed=s, warn_independent_sampling=False),
    "qmc": lambda s: optuna.samplers.QMCSampler(seed=s, scramble=True, warn_independent_sampling=False),
}

# Optuna's GPSampler needs torch (bench/requirements.txt installs it; a venv without it
# benchmarks the other kinds and says so).
try:
    import torch  # noqa: F401

    SAMPLERS["gp"] = lambda s: optuna.samplers.GPSampler(seed=s)
except ImportError:
    pass

DESCRIPTION = {
    "random": "optuna.samplers.RandomSampler(seed=s)",
    "tpe": "optuna.samplers.TPESampler(seed=s)  # 5.0: multivariate, constant liar",
    "cmaes": "optuna.samplers.CmaEsSampler(seed=s)",
    "qmc": "optuna.samplers.QMCSampler(seed=s, scramble=True)",
    "gp": "optuna.samplers.GPSampler(seed=s)  # needs torch",
}


def parse_names(arg):
    names = list(SAMPLERS) if arg in (None, "all") else [n for n in arg.split(",") if n]
    unknown = [n for n in names if n not in SAMPLERS]
    if "gp" in unknown:
        raise SystemExit("Optuna's GPSampler needs torch: pip install -r bench/requirements.txt")
    if unknown:
        raise SystemExit(f"unknown Optuna sampler(s) {unknown}; known: {', '.join(SAMPLERS)}")
    return names
