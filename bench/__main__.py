"""`python -m bench`: every benchmark, bench/results.json and BENCHMARKS.md (bench/report.py)."""

from bench.report import main

raise SystemExit(main())
