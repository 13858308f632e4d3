"""The flytekit adapter: where flytekit meets the SDK-neutral core.

A request's walk reads adapter -> core -> adapter:

* :mod:`.entrypoint` -- what flytekit's ``flytekit.plugins`` entry point loads; installs :mod:`.hooks`.
* :mod:`.hooks` -- flytekit's task execution, ``SecretsManager`` and serialization, taught about AWS requests.
* :mod:`.serialize` -- what registration writes into the task spec (cluster modes, the pod command).
* :mod:`.runtime` -- a task's requests in: the core resolves and mounts them; user code runs; cleanup.
* :mod:`.names` -- flytekit's names for a request (``_FSEC_`` variable, ``<group>/<key>`` file) and the
  lookups ``SecretsManager`` answers from.
* :mod:`.present` -- values flytekit or the cluster already put in place.
* :mod:`.secret` -- :func:`aws_secret`, flytekit ``Secret`` objects from references.
* :mod:`.outputs` -- the output types flytekit would store opaquely (pickles), for the leak guard.
* :mod:`.walk` -- the tasks of a workflow, launch plan or module, for ``pyflyte-awssecrets check``.
* :mod:`.deck` -- the "AWS secrets" deck.
* :mod:`.podguard` -- ``pyflyte-awssecrets-execute``, the pod's command.

Nothing in the core (the package's top-level modules) imports flytekit or this package; a third SDK is
a new adapter beside this one and :mod:`flytekitplugins_awssecrets.flyte2`.
"""
