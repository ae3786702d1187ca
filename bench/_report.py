"""One machine-readable line per measured target, collected by bench/run_all.py into RESULTS.md
and its chart: ``TARGET <name> measured=<x> target<op><y> MET|NOT MET``."""

from __future__ import annotations

import operator

OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


def target(name: str, measured: float, op: str, goal: float, unit: str = "") -> bool:
    met = OPS[op](measured, goal)
    unit = unit.strip()
    print(f"TARGET {name} measured={measured:.4g}{unit} target{op}{goal:g}{unit} "
          f"{'MET' if met else 'NOT MET'}", flush=True)
    return met
