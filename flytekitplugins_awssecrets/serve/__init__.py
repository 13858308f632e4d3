"""``pyflyte-awssecrets serve``: a local secrets endpoint for tasks that are not Python.

Two front ends over the plugin's resolution and one TTL cache:

* the Secret Agent protocol (framed JSON on TCP or a Unix socket), :mod:`.secret_agent`;
* AWS Secrets Manager Agent's HTTP API (``/secretsmanager/get``), :mod:`.http_api`.

Modules, along the data path: :mod:`.config` (where and how to listen), :mod:`.agent_protocol` (framing,
pure), :mod:`.secret_agent` and :mod:`.http_api` (the front ends), :mod:`.source` (both front ends' way to
the resolver), :mod:`.server` (listeners, shutdown), :mod:`.commands` (the click command).

Importing this package does no I/O and imports neither boto3 nor asyncio servers.
"""
