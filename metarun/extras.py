"""Optional features that need packages outside metarun's core dependencies."""

from __future__ import annotations

import importlib.util

from metarun.errors import MissingExtraError

#: extra -> (the module it provides, what needs it)
EXTRAS = {
    "sweep": ("hydra_plugins.hydra_optuna_sweeper", "hparams_search (Hydra's Optuna sweeper)"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra/launcher=joblib"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra/launcher=submitit_slurm "
              "(Hydra's submitit launcher)"),
    "tensorboard": ("tensorboard", "logger=tensorboard"),
    "mlflow": ("mlflow", "logger=mlflow"),
    "wandb": ("wandb", "logger=wandb"),
}


def installed(extra: str) -> bool:
    """Whether the package behind ``extra`` can be imported."""
    module = EXTRAS[extra][0]
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
