"""The confidence intervals omega eval reports."""

import math

import pytest

from omega.training.evaluate import mean_ci95, wilson_ci95


def test_wilson_interval_against_known_values():
    # 95 of 100: the textbook Wilson score interval.
    lo, hi = wilson_ci95(95, 100)
    assert lo == pytest.approx(0.8882, abs=1e-4) and hi == pytest.approx(0.9785, abs=1e-4)
    # The bounds at 0 and n successes are exact, not 0 or 1 up to rounding.
    assert wilson_ci95(0, 100) == (0.0, pytest.approx(0.0370, abs=1e-4))
    assert wilson_ci95(0, 100)[0] == 0.0 and wilson_ci95(100, 100)[1] == 1.0
    assert wilson_ci95(100, 100)[0] == pytest.approx(0.9630, abs=1e-4)
    assert all(math.isnan(x) for x in wilson_ci95(0, 0))


def test_mean_interval_is_normal_approximation():
    lo, hi = mean_ci95([0.0, 1.0, 2.0, 3.0])
    half = 1.959964 * math.sqrt(5 / 3) / 2  # sample sd sqrt(5/3), n = 4
    assert lo == pytest.approx(1.5 - half) and hi == pytest.approx(1.5 + half)
    assert mean_ci95([2.0]) == (2.0, 2.0)
