"""Benchmarks of the course and of tlkit: scripts anyone can run (CPU by default, GPU when present).

Each script is a module with a `main(argv)` that measures, writes bench/results/<name>-<device>.json and prints
a summary; `python -m bench.run_all` runs them all and `python -m bench.report` redraws the plots. See RESULTS.md.
"""
