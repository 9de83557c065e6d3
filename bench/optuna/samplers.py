"""The Optuna samplers compared with gaittune's, keyed by gaittune's sampler kind.

Each is Optuna 5.0's default configuration of that sampler, as in the reference scripts
(../shared/reference/optuna-5.0/scripts/), so a kind's figures sit next to its counterpart:
random <-> RandomSampler, tpe <-> TPESampler() (multivariate by default in 5.0),
cmaes <-> CmaEsSampler(), qmc <-> QMCSampler(scramble=True) (scrambled so the seed matters;
unscrambled Sobol would be the same sequence for every seed and a rank test over seeds
would say nothing).
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

DESCRIPTION = {
    "random": "optuna.samplers.RandomSampler(seed=s)",
    "tpe": "optuna.samplers.TPESampler(seed=s)  # 5.0: multivariate, constant liar",
    "cmaes": "optuna.samplers.CmaEsSampler(seed=s)",
    "qmc": "optuna.samplers.QMCSampler(seed=s, scramble=True)",
}


def parse_names(arg):
    names = list(SAMPLERS) if arg in (None, "all") else [n for n in arg.split(",") if n]
    unknown = [n for n in names if n not in SAMPLERS]
    if unknown:
        raise SystemExit(f"unknown Optuna sampler(s) {unknown}; known: {', '.join(SAMPLERS)}")
    return names
