"""``theodolite dashboard``: a web view of a cluster, and cancel / resume from it.

A small aiohttp service beside the planner and the workers, holding no state of its own: it
reads jobs and steps from MongoDB (the views of ``theodolite jobs`` and ``status``), hears the
cluster's events once (the feed of ``theodolite monitor``) and pushes them to its pages as
server-sent events, and acts through the same decisions as ``theodolite cancel`` and
``resume`` (:mod:`services.job_actions`). Modules: :mod:`~services.dashboard.cli` (the
command), :mod:`~services.dashboard.app` (routes), :mod:`~services.dashboard.reads`
(MongoDB), :mod:`~services.dashboard.live` (events), :mod:`~services.dashboard.access` (who
may act), :mod:`~services.dashboard.graph` (a job's graph laid out), ``static/`` (the pages).
"""
