"""`claw bench` (also `python scripts/bench.py`, `python -m cli.bench`): the cluster's figures next to
the raw JetStream round trip, measured in one run on one machine. docs/Performance.md explains each
figure.

One run starts, in a temporary directory, a nats-server on free ports and then:

1. the raw baseline (`raw`): a stream of its own and a second process that fetches, acks and
   replies - throughput and one-in-flight round-trip latency;
2. for each worker count W (default 1 and 2), a fresh cluster - a coordinator and W workers as real
   processes, started by the launcher of `claw up` (`cli.cluster`), its own prefix and database,
   the same nats-server - on which it measures (`measure`) idle RSS, then (on the cluster with the
   most workers only) submit latency through `ClawClient.submit`, through the code path of
   `claw submit`, whole `claw submit` processes, and end-to-end latency with one task in flight,
   and last the no-op throughput: N `echo` tasks through `submit_many`, from the first submit until
   the last is `succeeded` in SQLite, with the CPU time and peak RSS of every process (`probes`)
   and the database's size;
3. with `--tracing`, the throughput once more on a fresh cluster with the most workers whose
   processes record every span (or those of `--trace-sample-ratio` of the tasks) and export them
   over OTLP to a counting sink (`span_sink`, a process of its own), compared with the untraced run
   of the same worker count; with `--prefill N`, once more on a database already holding N
   finished tasks (`prefill`); with `--profile DIR`, py-spy samples the processes (`profile`).

The measuring code is the only code added: the cluster runs exactly as `claw up` runs it. Every
process it starts is stopped on the way out, on Ctrl-C and on errors too, and dies with the
benchmark if the benchmark itself is killed (`cli.processes`). `report` turns the figures into the
JSON document and the table.
"""

from cli.bench.main import main

__all__ = ["main"]
