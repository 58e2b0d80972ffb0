"""The ``metarun`` command: the one ``@hydra.main``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig


def _config_dir() -> str:
    """``conf/`` inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"metarun's conf/ folder is missing next to {here}; reinstall metarun")


_DEVICE_SHORTHAND = re.compile(r"^device=((?:cuda:\d+)(?:,cuda:\d+)*)$")


def expand_device_shorthand(argv: list[str]) -> list[str]:
    """Let ``device=cuda:N`` select the ``cuda`` option of the ``device`` group on GPU N.

    ``device`` is a config group (auto, cpu, cuda, mps), so Hydra alone would look for a file
    ``device/cuda:1.yaml``; this rewrites the argument to ``device=cuda device.name=cuda:1``.
    A sweep ``device=cuda:0,cuda:1`` becomes ``device=cuda device.name=cuda:0,cuda:1``.
    """
    out = []
    for arg in argv:
        match = _DEVICE_SHORTHAND.match(arg)
        out += ["device=cuda", f"device.name={match.group(1)}"] if match else [arg]
    return out


@hydra.main(version_base="1.3", config_path=_config_dir(), config_name="config")
def _app(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from metarun.run import run

    return run(cfg, HydraConfig.get().runtime.output_dir).objective


def main() -> None:
    """Console-script entry point."""
    sys.argv = [sys.argv[0], *expand_device_shorthand(sys.argv[1:])]
    _app()


if __name__ == "__main__":
    main()
