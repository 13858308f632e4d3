"""Per-task environment variables in one process: what ``os.environ`` shows depends on the task reading it.

A local Flyte 2 run (``flyte run --local``, ``flyte.run``) runs every task of the run in one process: child
tasks are coroutines of the parent's event loop (``asyncio.gather`` gives each its own asyncio task), sync
tasks run in a thread that copies the caller's context (``flyte._utils.asyncify.run_sync_in_thread``). They
share one ``os.environ``. So that each task sees only its own secrets, the adapter keeps a task's environment
variables in a :class:`contextvars.ContextVar` (its *view*) and, while any task holds one, swaps the mapping
behind ``os.environ`` (and ``os.environb``, which shares it) for :class:`_Overlay`:

* reading (``os.environ[...]``, ``os.getenv``, ``in``, iteration, ``copy()``, ``dict(os.environ)``) shows the
  current context's own names first, then the real environment;
* a name another task holds is in no other view, and never in the real environment, so it is invisible;
* a write or delete of a name of the current view changes that view; any other write goes to the real
  environment, as before.

The ``os.environ`` object stays the same object (code that did ``from os import environ`` sees the same), and
the real mapping is put back, unchanged, when the last view ends. What a view holds is never given to the C
library (``putenv``): a subprocess started without ``env=`` inherits the real environment only, not the
task's secrets (pass ``env=os.environ.copy()`` to hand them on). A thread started with ``threading.Thread``
(or a ``ThreadPoolExecutor``) begins with an empty context on Python < 3.14 and sees no task's secrets.

In a pod (one task per process) the adapter writes the real environment instead, see :mod:`.mount`.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

__all__ = ["enter", "installed", "leave"]

#: The current task's own variables, encoded as ``os.environ`` stores them; ``None`` marks a name the task
#: deleted. Unset (``None``) outside any task: the real environment only.
_view: contextvars.ContextVar[dict[Any, Any] | None] = contextvars.ContextVar(
    "flytekitplugins_awssecrets_env", default=None
)
_lock = threading.Lock()
_users = 0
_real: dict[Any, Any] | None = None


class _Overlay(MutableMapping[Any, Any]):
    """What ``os.environ._data`` becomes while views exist: the current view over the real mapping."""

    def __init__(self, real: dict[Any, Any]) -> None:
        self.real = real

    def __getitem__(self, key: Any) -> Any:
        view = _view.get()
        if view is not None and key in view:
            value = view[key]
            if value is None:
                raise KeyError(key)
            return value
        return self.real[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        view = _view.get()
        if view is not None and key in view:
            view[key] = value
        else:
            self.real[key] = value

    def __delitem__(self, key: Any) -> None:
        view = _view.get()
        if view is not None and key in view:
            if view[key] is None:
                raise KeyError(key)
            view[key] = None
        else:
            del self.real[key]

    def _keys(self) -> list[Any]:
        view = _view.get()
        if not view:
            return list(self.real)
        own = [k for k, v in view.items() if v is not None]
        return [k for k in self.real if k not in view] + own

    def __iter__(self) -> Iterator[Any]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        return f"_Overlay({len(self)} names)"  # never the values


def installed() -> bool:
    """True while ``os.environ`` reads through :class:`_Overlay`."""
    return isinstance(getattr(os.environ, "_data", None), _Overlay)


def _install() -> None:
    global _users, _real
    with _lock:
        if _users == 0:
            data = os.environ._data  # type: ignore[attr-defined]
            # Left by a reloaded copy of this module: its real mapping is the real one.
            data = getattr(data, "real", data) if type(data).__name__ == "_Overlay" else data
            _real = data
            overlay = _Overlay(data)
            os.environ._data = overlay  # type: ignore[attr-defined]
            environb = getattr(os, "environb", None)
            if environb is not None and getattr(environb._data, "real", environb._data) is data:
                environb._data = overlay
        _users += 1


def _uninstall() -> None:
    global _users, _real
    with _lock:
        _users -= 1
        if _users == 0 and _real is not None:
            for env in (os.environ, getattr(os, "environb", None)):
                if env is not None and isinstance(getattr(env, "_data", None), _Overlay):
                    env._data = _real  # type: ignore[union-attr]
            _real = None


class Scope:
    """One task's view, entered by :func:`enter` and ended by :func:`leave` (in the same context)."""

    def __init__(self, token: contextvars.Token[dict[Any, Any] | None], counted: bool) -> None:
        self.token = token
        self.counted = counted


def enter(values: Mapping[str, str], *, install: bool = True) -> Scope:
    """Make ``values`` the current context's only task variables (hiding its parent's).

    ``install=False`` (a task with no secret of its own) only hides inherited views, and only when the
    overlay is already there; nothing then is installed for it.
    """
    counted = False
    if values or install:
        _install()
        counted = True
    encode_key, encode_value = os.environ.encodekey, os.environ.encodevalue  # type: ignore[attr-defined]
    view = {encode_key(k): encode_value(v) for k, v in values.items()}
    return Scope(_view.set(view), counted)


def leave(scope: Scope) -> None:
    """End a view: the context sees what it saw before :func:`enter`."""
    try:
        _view.reset(scope.token)
    except (ValueError, RuntimeError):  # another context (or twice): that context's view ends with it
        pass
    if scope.counted:
        _uninstall()
