"""psyml-style manifests: parameters and secrets kept in a committed, KMS-encrypted YAML file.

Modules, in the order data flows through them:

* :mod:`~.yamlio` -- YAML that keeps every scalar's text;
* :mod:`~.model` -- the file's pydantic models and validation;
* :mod:`~.crypto` -- psyml-compatible KMS encryption of values;
* :mod:`~.store` -- reading and writing SSM and Secrets Manager (batched, concurrent);
* :mod:`~.diff` -- comparing the file with AWS (pure);
* :mod:`~.export` -- shell, dotenv and JSON output (pure);
* :mod:`~.commands` -- the ``pyflyte-awssecrets manifest`` click group.

Nothing here imports boto3 until an AWS call is made.
"""
