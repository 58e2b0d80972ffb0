"""``metarun-ensemble METHOD CHECKPOINT... [KEY=VALUE ...]``: exactly
``metarun-eval checkpoint=[CHECKPOINT,...] ensemble=METHOD [KEY=VALUE ...]``.

One way to evaluate an ensemble, with metarun-eval's keys (``eval.test_episodes``,
``eval.ways``, ``seed``, ``data.root``, ``device``, ``hydra.run.dir``, ``-m`` ...), its
summary and its output; this command only spells the checkpoints as arguments.
"""

from __future__ import annotations

import argparse
import sys

from metarun.configs import ENSEMBLE_METHODS

#: The options of earlier versions -> the key now (metarun-eval's).
OLD_OPTIONS = {"--out": "hydra.run.dir=DIR", "--device": "device=NAME",
               "--episodes": "eval.test_episodes=N", "--ways": "eval.ways=N",
               "--shots": "eval.shots=N", "--queries": "eval.queries=N", "--seed": "seed=N",
               "--data-root": "data.root=DIR"}


def _quoted(path: str) -> str:
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"


def translate(argv: list[str]) -> list[str]:
    """metarun-eval's command line for ``argv`` (exits with status 2 and one error line for
    a bad method, no checkpoint, or an option of earlier versions)."""
    parser = argparse.ArgumentParser(
        prog="metarun-ensemble",
        usage="metarun-ensemble {average,select,fuse} CHECKPOINT... [KEY=VALUE ...]",
        description="Meta-test several finished runs and their ensemble on one fixed set of "
                    "test episodes: metarun-eval checkpoint=[...] ensemble=METHOD.")
    parser.add_argument("method", choices=ENSEMBLE_METHODS,
                        help="average: mean predictions; select: best validation score; "
                             "fuse: mean weights (one architecture)")
    parser.add_argument("rest", nargs=argparse.REMAINDER,
                        help="checkpoint files or run directories, then metarun-eval's "
                             "KEY=VALUE overrides and flags")
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag in OLD_OPTIONS:
            parser.error(f"{flag} is now {OLD_OPTIONS[flag]} (metarun-eval's key)")
    args = parser.parse_args(argv)
    paths: list[str] = []
    for arg in args.rest:
        if "=" in arg or arg.startswith("-"):
            break
        paths.append(arg)
    if not paths:
        parser.error("name at least one checkpoint file or run directory")
    rest = args.rest[len(paths):]
    return [f"checkpoint=[{','.join(_quoted(p) for p in paths)}]", f"ensemble={args.method}",
            *rest]


def main() -> None:
    """Console-script entry point."""
    from metarun.cli.common import main as run_command
    from metarun.cli.evaluate import COMMAND

    run_command(COMMAND, translate(sys.argv[1:]), prog="metarun-ensemble")


if __name__ == "__main__":
    main()
