"""Optional features that need packages outside metarun's core dependencies."""

from __future__ import annotations

import importlib.util
import os

from metarun.errors import MissingExtraError

#: extra -> (the module it provides, what needs it)
EXTRAS = {
    "sweep": ("optuna", "hparams_search (metarun's Optuna sweeper)"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra/launcher=joblib"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra/launcher=submitit_slurm "
              "(Hydra's submitit launcher)"),
    "tensorboard": ("tensorboard", "logger=tensorboard"),
    "mlflow": ("mlflow", "logger=mlflow"),
    "wandb": ("wandb", "logger=wandb"),
}


#: Set by ``metarun dist.nproc=N`` for the processes it starts: their command line is one
#: job's overrides, already checked where the job runs (a search's ``hparams_search`` among
#: them, without ``-m``).
JOB_RANK_ENV = "METARUN_JOB_RANK"

#: Hydra's own Optuna sweeper plugin (optuna 2 only): it registers the same
#: ``hydra/sweeper=optuna`` as metarun's, so the two cannot be installed together.
OLD_OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper"


def installed(extra: str) -> bool:
    """Whether the package behind ``extra`` can be imported."""
    return found(EXTRAS[extra][0])


def found(module: str) -> bool:
    """Whether ``module`` can be imported."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


def require(extra: str) -> None:
    """Raise :class:`MissingExtraError` saying what to install unless ``extra`` is installed."""
    if not installed(extra):
        module, what = EXTRAS[extra]
        raise MissingExtraError(f"{what} needs the optional package {module.split('.')[-1]}: "
                                f"pip install 'metarun[{extra}]'")


#: Command-line choices that need an optional extra.
_NEEDS_EXTRA = (("hparams_search=", "sweep"), ("hydra/sweeper=optuna", "sweep"),
                ("hydra/launcher=joblib", "joblib"), ("hydra/launcher=submitit", "slurm"),
                ("logger=tensorboard", "tensorboard"), ("logger=mlflow", "mlflow"),
                ("logger=wandb", "wandb"))


def check_extras(argv: list[str]) -> str | None:
    """An error line when the command line asks for an optional feature that is not installed,
    or for an Optuna search without ``-m``."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    # one choice each: logger=[tensorboard,mlflow] (several options) or a,b (a sweep)
    choices = [f"{a.split('=', 1)[0]}={v}" for a in argv if "=" in a
               for v in a.split("=", 1)[1].strip("[]").split(",")]
    for arg in choices:
        for prefix, extra in _NEEDS_EXTRA:
            if arg.lstrip("+").startswith(prefix) and not arg.endswith("=null"):
                try:
                    require(extra)
                except MissingExtraError as e:
                    return str(e)
                if extra == "sweep" and not multirun and not os.environ.get(JOB_RANK_ENV):
                    return f"{arg} runs an Optuna search over many runs: add -m (--multirun)"
                if extra == "sweep" and found(OLD_OPTUNA_SWEEPER):
                    return ("hydra-optuna-sweeper is installed and takes hydra/sweeper=optuna "
                            "from metarun's own Optuna sweeper: pip uninstall "
                            "hydra-optuna-sweeper")
    return None
