"""Domain router: which baseline does a text belong to, when the request names none?

A light text classifier: TF-IDF over word unigrams and bigrams plus punctuation tokens (strong signals for
code and contracts), multinomial logistic regression, fitted with scikit-learn on chunks of the baseline
corpora (train split only).  It is stored as plain JSON (vocabulary, idf, coefficients) and scored with
numpy at load time -- no pickle, no skops needed.  An explicit domain always wins over the router; below
``min_confidence`` the router answers the ``fallback`` (general) domain and says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from .model import BaselineError

__all__ = ["Route", "Router", "fit_router"]

TOKEN_PATTERN = r"(?u)\b\w\w+\b|[^\w\s]"
FORMAT = "guardrail.router/1"


class Route(BaseModel):
    domain: str
    confidence: float  # the classifier's probability for its top domain
    routed_by: str  # "explicit" | "router" | "fallback"
    top: str  # the classifier's top domain, even when it fell back


class Router(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    classes: list[str]
    vocabulary: dict[str, int]
    idf: list[float]
    coef: list[list[float]]
    intercept: list[float]
    ngram_range: tuple[int, int] = (1, 2)
    min_confidence: float = 0.5
    fallback: str = "global"
    accuracy: dict[str, dict[str, float]] = {}  # per domain, on held-back documents: top1, routed, fallback

    def _vectorizer(self):
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(token_pattern=TOKEN_PATTERN, ngram_range=self.ngram_range, sublinear_tf=True,
                              lowercase=True, vocabulary=self.vocabulary)
        vec.idf_ = np.asarray(self.idf)
        return vec

    def proba(self, texts: Sequence[str]) -> np.ndarray:
        vec = getattr(self, "_vec", None)
        if vec is None:
            vec = self._vectorizer()
            object.__setattr__(self, "_vec", vec)
        x = vec.transform(list(texts))
        z = x @ np.asarray(self.coef).T + np.asarray(self.intercept)
        z = np.asarray(z) - np.asarray(z).max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def route(self, text: str, explicit: str | None = None) -> Route:
        if explicit:
            return Route(domain=explicit, confidence=1.0, routed_by="explicit", top=explicit)
        p = self.proba([text])[0]
        i = int(np.argmax(p))
        conf = float(p[i])
        if conf < self.min_confidence:
            return Route(domain=self.fallback, confidence=conf, routed_by="fallback", top=self.classes[i])
        return Route(domain=self.classes[i], confidence=conf, routed_by="router", top=self.classes[i])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.model_dump(mode="json"), separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Router:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format must be {FORMAT!r}")
            r = cls.model_validate(data)
        except (OSError, ValueError) as e:
            raise BaselineError(f"{path}: not a usable router file ({e})") from None
        if len(r.coef) != len(r.classes) or any(len(c) != len(r.idf) for c in r.coef):
            raise BaselineError(f"{path}: router coefficients do not match its classes and vocabulary")
        return r


def fit_router(
    texts: Sequence[str], labels: Sequence[str], *, max_features: int = 8000, c: float = 4.0,
    min_confidence: float = 0.5, fallback: str = "global",
) -> Router:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(token_pattern=TOKEN_PATTERN, ngram_range=(1, 2), sublinear_tf=True, lowercase=True,
                          max_features=max_features, dtype=np.float64)
    x = vec.fit_transform(list(texts))
    clf = LogisticRegression(C=c, max_iter=2000)
    clf.fit(x, list(labels))

    def r(v: float) -> float:
        return float(f"{v:.5g}") if math.isfinite(v) else 0.0

    coef, intercept = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # binary LR keeps one row; softmax over [-z/2, z/2] is its sigmoid
        coef, intercept = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])

    return Router(
        classes=[str(k) for k in clf.classes_],
        vocabulary={k: int(v) for k, v in vec.vocabulary_.items()},
        idf=[r(v) for v in vec.idf_], coef=[[r(v) for v in row] for row in coef],
        intercept=[r(v) for v in intercept], min_confidence=min_confidence, fallback=fallback,
    )
