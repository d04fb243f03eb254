import json

import pytest

from guardrail.baselines.model import BaselineError
from guardrail.baselines.registry import shipped_dir
from guardrail.baselines.router import Router, fit_router

CODE = ["def f(x):\n    return x + 1", "import os\nfor i in range(3):\n    print(i)", "class A:\n    pass",
        "if x == 1:\n    y = {'a': [1, 2]}", "while True:\n    break", "def g(a, b=2):\n    return a * b"]
LEGAL = ["The Licensee shall indemnify the Licensor against all claims.", "This Agreement shall terminate upon notice.",
         "The parties agree that the governing law shall be the laws of Delaware.",
         "Licensor grants Licensee a non-exclusive license.", "Any dispute shall be settled by arbitration.",
         "The term of this Agreement is five years from the Effective Date."]


def test_router_learns_and_round_trips(tmp_path):
    r = fit_router(CODE * 3 + LEGAL * 3, ["code"] * 18 + ["legal"] * 18, min_confidence=0.6)
    assert r.route("def h(z):\n    return z - 1").domain == "code"
    assert r.route("The Licensee shall pay all fees under this Agreement.").domain == "legal"
    r.save(tmp_path / "r.json")
    back = Router.load(tmp_path / "r.json")
    assert back.route("for k in range(9):\n    print(k)").domain == "code"


def test_explicit_domain_wins_and_low_confidence_falls_back():
    r = fit_router(CODE * 3 + LEGAL * 3, ["code"] * 18 + ["legal"] * 18, min_confidence=0.99, fallback="global")
    assert r.route("def f(): pass", explicit="legal").routed_by == "explicit"
    route = r.route("zebra")  # nothing the router knows
    assert route.domain == "global" and route.routed_by == "fallback" and route.confidence < 0.99


def test_bad_router_file(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"format": "guardrail.router/1", "classes": ["a"], "vocabulary": {"x": 0}, "idf": [1.0],
                             "coef": [[1.0, 2.0]], "intercept": [0.0]}))
    with pytest.raises(BaselineError, match="do not match"):
        Router.load(p)
    p.write_text("{}")
    with pytest.raises(BaselineError, match="not a usable router"):
        Router.load(p)


def test_shipped_router_routes_held_back_documents():
    """The committed router (scripts/fit_router.py) with its measured per-domain accuracy on test-split documents."""
    r = Router.load(shipped_dir() / "router.json")
    assert len(r.classes) == 7
    for d, acc in r.accuracy.items():
        assert acc["n"] >= 100 and acc["top1"] >= 0.85, (d, acc)
    assert r.route("def parse(self, data):\n    for key, value in data.items():\n        self.x[key] = value\n    return self").domain == "code_python"
