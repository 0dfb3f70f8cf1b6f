"""`miniupi console`: a live web page of the cluster for its operator.

The console is one more process beside the nodes (supervised by `miniupi
run` when the cluster file has a `[console]` table, or run alone). It reads
the cluster as the admin and the supervisor do, and the gateways' Prometheus
metrics, and pushes what changes to every open page over server-sent events:
the nodes (access.py guards who may control them), the traffic charts
(metrics.py), the audit on demand (audit.py). feed.py gathers, app.py serves,
server.py listens; static/ is the page, its scripts and the vendored uPlot.
"""
