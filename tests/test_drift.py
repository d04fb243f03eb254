"""The drift monitor: online conformal p-values and a test martingale (guardrail.guard.drift).

Under the null (traffic exchangeable with the calibration scores) it rarely alarms -- however the calibration
sample happened to fall, where a martingale over p-values against one fixed calibration sample alarms in ~30 %
of runs (the reason the monitor ranks every text among the calibration and all earlier texts); tied scores are
broken at random; drifted scores alarm within a few texts and the monitor restarts after each alarm; buckets are
ranked apart; the Guard attaches each fresh verdict's drift state (a cached message is not observed twice); and on
real text through the embedded model, held-back medical answers raise no alarm against the medical_qa baseline
while Python source raises one (measured by scripts/drift_eval.py: after 28 texts, median of 5 orders)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from guard_helpers import benign, embedded_scorer, generation

from guardrail.backends.scripted import ScriptedBackend
from guardrail.baselines.registry import resolve
from guardrail.baselines.verdict import judge
from guardrail.guard import Guard, load_policy
from guardrail.guard.drift import DriftBoard, DriftMonitor
from guardrail.types import Side

DATA = Path(__file__).parent / "data"


def test_exchangeable_traffic_rarely_alarms_whatever_the_calibration_sample():
    rng = np.random.default_rng(0)
    online = fixed = 0
    for run in range(300):
        cal, traffic = rng.normal(size=20), rng.normal(size=1000)  # a small calibration sample: luck matters
        m = DriftMonitor([cal], seed=run)
        for x in traffic:
            m.observe(float(x))
        online += m.alarmed
        # the same martingale over p-values against the fixed sample (randomized within their step): they are
        # uniform on average over samples, not given one, and not independent -- an unlucky sample alarms
        naive = DriftMonitor(seed=run)
        for x in traffic:
            naive.update((1 + (cal >= x).sum() - rng.random()) / 21)
        fixed += naive.alarmed
    assert online <= 9  # Ville: <= 1 % of runs in expectation (3 expected); 9 is far in the tail
    assert fixed >= 45  # measured: 89 of 300


def test_tied_scores_are_broken_at_random():
    rng = np.random.default_rng(1)
    m = DriftMonitor([rng.integers(0, 4, 50).astype(float)], seed=1)  # an integer-valued score: many ties
    ps = [m.observe(float(x)).p_value for x in rng.integers(0, 4, 3000)]
    assert not m.alarmed and m.max_log10 < 2
    assert abs(np.mean(ps) - 0.5) < 0.02 and abs(np.mean(np.array(ps) < 0.1) - 0.1) < 0.02


def test_drifted_traffic_alarms_quickly_and_the_monitor_restarts():
    rng = np.random.default_rng(2)
    m = DriftMonitor([rng.normal(size=200)], seed=0)
    states = [m.observe(float(x)) for x in rng.normal(2.0, 1.0, 300)]  # shifted up: extreme scores far more often
    assert m.alarmed and m.alarmed_at < 40
    first = next(s for s in states if s.alarm)
    assert first.observed == m.alarmed_at and first.log10_martingale >= 2 and first.alarms == 1
    after = states[first.observed]  # the next text: counted from the restart
    assert after.log10_martingale < 2 and after.alarms == 1
    assert len(m.alarms) >= 3 and states[-1].alarms == len(m.alarms)  # persistent drift keeps alarming


def test_buckets_are_ranked_apart():
    m = DriftMonitor([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]], seed=0)
    assert m.observe(5.0, 0).p_value < 0.25  # above every score of bucket 0
    assert m.observe(5.0, 1).p_value > 0.75  # below every score of bucket 1


def test_history_is_dropped_past_its_bound():
    m = DriftMonitor([[0.0, 1.0]], seed=0, max_history=10)
    for i in range(10):
        m.observe(float(i))
    assert len(m._seen[0]) == 12
    s = m.observe(0.5)  # the 11th: ranked against the calibration scores alone, the first of a fresh martingale
    assert m._seen[0] == [0.0, 0.5, 1.0] and 1 / 3 <= s.p_value <= 2 / 3 and s.observed == 11
    assert m.log10_martingale == pytest.approx(np.log10(np.mean(np.linspace(0.01, 0.99, 99) * s.p_value ** (
        np.linspace(0.01, 0.99, 99) - 1))))


def test_alarm_level_must_exceed_one():
    with pytest.raises(ValueError):
        DriftMonitor(alarm=1)


def test_the_guard_reports_each_fresh_verdicts_drift_state():
    board = DriftBoard(seed=0)
    backend = ScriptedBackend([benign(), generation(benign(60, seed=3)), generation(benign(60, seed=4))],
                              scorer=embedded_scorer())
    guard = Guard(load_policy("default"), backend, output_regimes=[], drift=board)
    user = [{"role": "user", "content": "placeholder: the scripted scorer answers"}]
    r1 = asyncio.run(guard.chat(user)).report
    r2 = asyncio.run(guard.chat(user)).report  # the same message: its screen is cached, not observed again
    p1, o1, o2 = r1.prompt.verdicts[0].drift, r1.attempts[0].output.verdicts[0].drift, r2.attempts[0].output.verdicts[0].drift
    assert p1 is not None and p1.observed == 1 and 0 < p1.p_value <= 1
    assert o1 is not None and o1.observed == 1 and o2.observed == 2
    mons = board.monitors()
    assert mons[(guard.baselines["prompt"].id, "prompt")].n == 1
    assert mons[(guard.baselines["output"].id, "output")].n == 2
    assert Guard(load_policy("default"), backend, output_regimes=[], drift=None).drift is None


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.slow
def test_real_text_in_domain_raises_no_alarm_and_another_domain_does(backend):
    """The embedded model scores held-back MedQuAD answers (the medical_qa baseline's test split), then held-back
    Python source: no alarm on the first, an alarm after the switch."""
    base = resolve("medical_qa", "text")

    async def verdicts(texts):
        return [judge(base, await backend.score(t, side=Side.TEXT), side="prompt", scorer_kind="embedded")
                for t in texts]

    medical = asyncio.run(verdicts(_texts(DATA / "calibration" / "medical_qa.jsonl")))
    code = asyncio.run(verdicts(_texts(DATA / "drift" / "code_python.jsonl")))
    m = DriftMonitor.for_calibrator(base.calibrator, seed=0)
    for v in medical:
        m.observe(v.monitor_point[1], v.monitor_point[0])
    assert not m.alarmed, m.max_log10
    before = m.max_log10
    states = [m.observe(v.monitor_point[1], v.monitor_point[0]) for v in code]
    assert m.alarmed, m.max_log10
    until = next(i for i, s in enumerate(states, 1) if s.alarm)
    print(f"medical_qa: 60 held-back answers, max log10 M {before:.2f} before the switch; "
          f"alarm after {until} units of Python source")
    assert until <= 60
