"""Tasks that P5 serialises with ``pyflyte serialize`` and runs with ``pyflyte-execute``, as a pod would."""
