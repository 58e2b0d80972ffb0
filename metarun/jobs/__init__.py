"""Jobs: config and output directory in, a result and its ``summary.json`` out (training,
evaluation, ensembles)."""
