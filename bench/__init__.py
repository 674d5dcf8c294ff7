"""The benchmark: capture generator (generate.py), tool comparison (run.py), stage timings (stages.py)."""
