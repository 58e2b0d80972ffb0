"""The console scripts: each a thin layer over the shared skeleton in :mod:`metarun.cli.common`.
Nothing in metarun imports this package."""
