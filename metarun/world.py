"""Where this process stands in a launcher's world (torchrun, ``dist.nproc``), from the
environment the launcher sets.

Apart from :mod:`metarun.engine.distributed`, and without torch: the commands read these
before they check the command line, and a command refused for a typo should answer before
torch is imported (about 2.4 of its 3.8 seconds on a 2-core CPU).
"""

from __future__ import annotations

import os


def env_world_size() -> int:
    """The number of processes a launcher (torchrun, ``dist.nproc``) started, from its
    environment; 1 outside one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """This process's rank in the launcher's environment; 0 outside one."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine (which GPU it takes); 0 outside a launcher."""
    return int(os.environ.get("LOCAL_RANK", "0"))
