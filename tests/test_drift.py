"""The drift martingale: small on p-values of the baseline's own traffic (uniform), alarms on drifted traffic,
and its false alarm rate under uniform p-values stays under 1 / alarm (Ville)."""

from __future__ import annotations

import numpy as np
import pytest

from guardrail.guard.drift import DriftMonitor


def test_uniform_p_values_rarely_alarm():
    rng = np.random.default_rng(0)
    alarms = 0
    for run in range(200):
        m = DriftMonitor(alarm=100, seed=run)
        for p in rng.uniform(size=500):
            m.update(float(p))
        alarms += m.alarmed
    assert alarms <= 6  # Ville: at most 1 % of runs in expectation (2 expected); 6 is far in the tail


def test_discrete_conformal_p_values_are_randomized_within_their_step():
    rng = np.random.default_rng(1)
    n = 99  # p = (1 + k) / (n + 1): with k uniform on 0..n the p-values are uniform on the grid
    m = DriftMonitor(seed=1)
    for k in rng.integers(0, n + 1, 2000):
        m.update((1 + k) / (n + 1), resolution=1 / (n + 1))
    assert not m.alarmed and m.log10_martingale < 1
    unrandomized = DriftMonitor()
    for k in rng.integers(0, n + 1, 2000):
        unrandomized.update((1 + k) / (n + 1))  # conservative (p >= uniform): never grows either
    assert not unrandomized.alarmed


def test_drifted_traffic_alarms_quickly():
    rng = np.random.default_rng(2)
    m = DriftMonitor(alarm=100, seed=0)
    for p in rng.beta(0.4, 1.0, 400):  # small p-values far more often than uniform
        m.update(float(p))
    assert m.alarmed and m.alarmed_at < 100 and m.log10_martingale > 2


def test_alarm_level_must_exceed_one():
    with pytest.raises(ValueError):
        DriftMonitor(alarm=1)
