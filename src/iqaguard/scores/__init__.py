"""Scores: pure functions on arrays (seed 002 eqs. 5-7, seed 001 eqs. 8-9, fidelity, certification)."""
