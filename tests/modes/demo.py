"""The demo workflow alone, for ``pyflyte --pkgs tests.modes serialize``: the whole ``examples`` package also
holds the Aptible example, which needs flytekit >= 1.16, and these tests run on every supported flytekit."""

from examples.secrets_demo import call_api, demo_wf  # noqa: F401
