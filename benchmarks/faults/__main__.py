"""`python -m benchmarks.faults`: see benchmarks/faults/proxy.py for the CLI."""

from benchmarks.faults.proxy import main

raise SystemExit(main())
