"""Limits on what pcs records (interim: the full checks land with the safe-input work)."""

from __future__ import annotations

import math
from typing import Any

from pcs.errors import InputLimitError

__all__ = ["check_param", "check_tag", "check_metric", "INT64_MIN", "INT64_MAX"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000


def check_param(key: str, value: Any) -> tuple[str, str]:
    text = str(value)
    if len(text) > MAX_PARAM_VALUE:
        raise InputLimitError(
            f"param {key!r} is {len(text)} characters long; MLflow keeps at most "
            f"{MAX_PARAM_VALUE}. Log long values as an artifact instead."
        )
    return key, text


def check_tag(key: str, value: Any) -> tuple[str, str]:
    text = str(value)
    if len(text) > MAX_TAG_VALUE:
        raise InputLimitError(
            f"tag {key!r} is {len(text)} characters long; MLflow keeps at most "
            f"{MAX_TAG_VALUE}. Log long values as an artifact instead."
        )
    return key, text


def check_metric(key: str, value: Any, step: int) -> tuple[str, float, int]:
    try:
        number = float(value)
    except (OverflowError, TypeError, ValueError):
        raise InputLimitError(
            f"metric {key!r} is {str(value)[:40]!r}, which is not representable as a float."
        ) from None
    if not isinstance(step, int) or isinstance(step, bool) or not INT64_MIN <= step <= INT64_MAX:
        raise InputLimitError(
            f"metric {key!r} has step {str(step)[:40]}; a step is an integer in the int64 range."
        )
    if math.isnan(number) or math.isinf(number):
        return key, number, step
    return key, number, step
