"""The side-by-side benchmark behind bench/compare.py (its CLI entry point).

- util: logging, setup commands, errors, ports, tree removal, the process
  group of servers and proxies (Children), the builds' environment.
- servers: S3 client (SigV4), bucket snapshot/restore, MinIO, the seed's
  go-cacher-server, the delay proxy.
- measure: timed builds, /usr/bin/time reports, CPU accounting, the seed's
  stats line.
- scenarios: workloads, scenario names and kinds, who takes part where, the
  Bench class that runs them.
- render: summary rows and the markdown tables; writing the outputs.

Python 3.11 standard library only.
"""
