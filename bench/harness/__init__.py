"""The timing harness the measurement scripts in `bench/` and the `compress bench` command share:
models to time, runtimes to time them on, clocks, and the tables and figures of the results."""
