"""The benchmark harness behind bench/run.py (its only entry point).

Imports go one way, from the top down; no module imports one above it:

- catalog: every scenario, its preset flags and its runner.
- runners, one per kind of measurement, each with add_args, check_args,
  smoke and scenario: compare (build comparisons: std, modules, seed,
  std-gocached, std-serve, std-signed), serverload, servenamed,
  installtime, ixstartup, floors, protocol (criterion).
- runner: the Bench class that runs every build of a comparison in order.
- render: summary rows and markdown tables of a comparison; writing them.
- servers: S3 client (SigV4), bucket snapshot/restore, MinIO, the seed's
  servers, the delay proxy (delayproxy.py, run as a child process).
- workloads: std, minio-go and the fixture, and the one-file-change edit.
- measure: timed builds, /usr/bin/time reports, CPU accounting.
- plan: workload, contender and build-case names; who takes part where.
- util: logging, setup commands, errors, ports, child processes, the
  builds' environment, --smoke's checks.

Python 3.11 standard library only.
"""
