"""xcore's metrics: what a process counts, and its exposition in the Prometheus text format.

`families` names every metric family xcore exposes. `tally` is what a process counts as it runs, in plain Python
(a request costs a dict lookup and two additions); `export` moves those counts into prometheus-client's values,
every few seconds and before each scrape, and writes the exposition. With several server workers each process
writes its own files under PROMETHEUS_MULTIPROC_DIR (prometheus-client's multi-process mode) and a scrape reads
them all; a single process (the desktop, the tests) keeps them in memory. `history` keeps the last hour of the
numbers the admin UI charts.

This package imports nothing of xcore above the foundation; what only a server worker knows (its plugins, its
task queue, the database) is added at scrape time by `xcore.web.metrics`.
"""
