"""metarun's Optuna search (``hydra/sweeper=optuna``): the search space (:mod:`.space`), the
search loop (:mod:`.sweeper`) and a trial's side, which reports its run's validations
(:mod:`.trial`). Needs the ``sweep`` extra (optuna)."""
