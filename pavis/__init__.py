"""pavis: a multi-worker HTTP reverse proxy whose runtime never interprets configuration.

The package holds the left half of the pipeline and the control plane:
intent → ingest → codec → core validation → sealed artifact (``pavis.compiler``,
``pavis.artifact``), the artifact store, the supervisor and the CLI. The runtime lives in
``workers/``; shared-memory publication in ``shm/``.
"""

__version__ = "0.1.0"
