"""A search space from Hydra's sweep syntax: ``hydra.sweeper.params`` and the command line.

=================================  ==============================================
``choice(a, b, c)`` or ``a,b,c``   categorical
``range(1, 5)``                    integers 1, 2, 3, 4 (the stop is excluded, as in Hydra)
``range(0.1, 0.5, 0.1)``           floats on that grid
``interval(0.01, 1.0)``            uniform floats; ``tag(log, interval(...))``: log-uniform
anything else                      a fixed override, the same in every trial
=================================  ==============================================
"""

from __future__ import annotations

import math
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


def search_space(arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The distributions of the swept keys, and the other overrides as they were given
    (``hydra.sweeper.params`` first, then the command line: a key in both is the command
    line's).

    Raises:
        ValueError: a sweep Optuna cannot sample (an empty range, a non-scalar choice).
    """
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        space.pop(key, None)  # a key given twice: the later one (the command line) counts
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
    return space, list(fixed.values())


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override."""
    key, value = override.get_key_element(), override.value()
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        # Hydra reads an interval's bounds as floats
        return FloatDistribution(float(value.start), float(value.end),  # type: ignore[arg-type]
                                 log="log" in value.tags)
    if override.is_range_sweep() and not value.shuffle:  # type: ignore[union-attr]
        assert isinstance(value, RangeSweep) and value.start is not None
        assert value.stop is not None
        start, stop, step = value.start, value.stop, value.step
        count = math.ceil((stop - start) / step - 1e-9)  # 0.1 to 0.5 by 0.1: 4 values
        if count < 1:
            raise ValueError(f"{override.input_line}: the range is empty")
        last = start + (count - 1) * step
        if all(isinstance(v, int) for v in (start, stop, step)):
            return IntDistribution(int(start), int(last), step=int(step))
        return FloatDistribution(float(start), round(float(last), 12), step=float(step))
    choices: list[Any] = list(override.sweep_iterator(transformer=Transformer.encode))
    for c in choices:
        if not isinstance(c, (str, int, float, bool, type(None))):
            raise ValueError(f"{key}: a choice must be a number, a string, true/false or "
                             f"null; got {c!r}")
    return CategoricalDistribution(choices)


def grid(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """Every value of each key, for Optuna's GridSampler.

    Raises:
        ValueError: a key is continuous (an interval): a grid needs choices or ranges.
    """
    values: dict[str, list[Any]] = {}
    for key, d in space.items():
        if isinstance(d, CategoricalDistribution):
            values[key] = list(d.choices)
        elif isinstance(d, (IntDistribution, FloatDistribution)) and d.step is not None \
                and not d.log:
            n = round((d.high - d.low) / d.step) + 1
            values[key] = [d.low + i * d.step if isinstance(d, IntDistribution)
                           else round(d.low + i * d.step, 12) for i in range(n)]
        else:
            raise ValueError(f"{key}: hydra/sweeper/sampler=grid needs a choice or a range, "
                             "not an interval")
    return values
