"""H-Mean: the single number that balances forgetting against retention."""

from __future__ import annotations

import math

from delete.metrics._validation import MetricInputError

__all__ = ["h_mean"]


def _check_percent(value: float, name: str) -> float:
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 100.0:
        raise MetricInputError(f"{name} must be an accuracy in [0, 100] percent, got {value}")
    return value


def h_mean(test_forget_acc: float, test_retain_acc: float) -> float:
    """Harmonic mean of forgetting efficacy and retained accuracy on the test set.

    With ``F = 100 - test_forget_acc`` (how completely the forget classes are gone) and
    ``R = test_retain_acc`` (how well the other classes are still recognised), both in percent::

        H = 2 * F * R / (F + R)

    and ``H = 0`` when either ``F`` or ``R`` is 0. It is high only when the forget classes
    are no longer recognised *and* the retained ones still are (DELETE, CVPR 2025, Sec. 5).

    Args:
        test_forget_acc: Accuracy on test samples of the forgotten classes, percent.
        test_retain_acc: Accuracy on test samples of the retained classes, percent.

    Returns:
        H-Mean in ``[0, 100]``.

    Raises:
        MetricInputError: An accuracy outside ``[0, 100]`` or NaN.

    Example:
        >>> h_mean(0.0, 100.0)
        100.0
        >>> round(h_mean(10.0, 90.0), 6)
        90.0
        >>> h_mean(100.0, 95.0)
        0.0
    """
    forget = 100.0 - _check_percent(test_forget_acc, "test_forget_acc")
    retain = _check_percent(test_retain_acc, "test_retain_acc")
    if forget == 0.0 or retain == 0.0:
        return 0.0
    return 2.0 * forget * retain / (forget + retain)
