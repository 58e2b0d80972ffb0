"""metarun's Optuna sweeper, a Hydra sweeper plugin: ``hydra/sweeper=optuna``
(:mod:`.optuna_sweeper`). Hydra finds it in the ``hydra_plugins`` namespace package."""
