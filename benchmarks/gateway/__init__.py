"""Issue #12's gateway benchmarks: the inferbridge gateway beside nginx and HAProxy (and
direct), in front of real inferbridge upstreams, healthy and under faults. Run with
`python -m benchmarks.gateway`; see README.md in this directory."""
