"""``python -m metarun`` is ``metarun`` (what ``torchrun -m metarun`` starts)."""

from metarun.cli.train import main

if __name__ == "__main__":
    main()
