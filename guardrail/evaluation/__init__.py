"""Evaluation: metrics, comparators, eval runners, plots."""
