"""Reading and writing SSM Parameter Store and Secrets Manager for a manifest: batched reads, concurrent
writes.

The function-level API (a benchmark or a script calls these directly; the CLI is a thin layer on top)::

    from flytekitplugins_awssecrets.manifest import store
    clients = store.Clients("us-east-1")
    report = store.sync(manifest, clients=clients, prune=True)   # manifest already decrypted
    report.ok, report.failed

Reads, fewest calls first:

* parameters under ``path``: ``GetParametersByPath`` (recursive, decrypted, paginated) for values and
  ``DescribeParameters`` (path filter, paginated) for descriptions and KMS keys;
* only the listed parameters: ``GetParameters`` in batches of 10 and ``DescribeParameters`` filtered by name
  in batches of 50, all batches at once on the thread pool;
* secrets: ``ListSecrets`` (name-prefix filter, paginated; brings descriptions, keys and tags) and
  ``BatchGetSecretValue`` in batches of 20;
* parameter tags (one ``ListTagsForResource`` each, there is no batch call) only when the file manages tags.

Writes run on a thread pool (``concurrency``, default 8) sharing one client per service, whose ``adaptive``
retry mode slows every thread down together when SSM throttles. Each entry's outcome is recorded: a failed
write never stops the others, and the :class:`SyncReport` says which succeeded and which failed.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from flytekitplugins_awssecrets.manifest.awsclient import (
    AwsCallError,
    describe_error,
    error_code,
    make_client,
)
from flytekitplugins_awssecrets.manifest.diff import Change, Entry, compare, desired_entries
from flytekitplugins_awssecrets.manifest.model import Manifest, parameter_full_name, secret_full_name

__all__ = [
    "DEFAULT_CONCURRENCY",
    "PROGRESS_MIN",
    "Clients",
    "Outcome",
    "SyncReport",
    "read_remote",
    "plan",
    "save",
    "sync",
    "nuke",
]

#: Writes in flight at once. SSM's default PutParameter quota is low; adaptive retries absorb the throttling.
DEFAULT_CONCURRENCY = 8
#: Show a progress bar (on a terminal) from this many writes on.
PROGRESS_MIN = 20
GET_PARAMETERS_BATCH = 10
DESCRIBE_FILTER_BATCH = 50
BATCH_GET_SECRETS = 20

Scope = Literal["path", "listed"]


class Clients:
    """One SSM and one Secrets Manager client for a region, created on first use and shared by threads.

    Example::

        clients = Clients("eu-west-1", concurrency=16)
        clients.ssm.meta.events.register("before-call", counter)   # e.g. a benchmark counting calls
    """

    def __init__(self, region: str, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.region = region
        self.concurrency = concurrency
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _get(self, service: str) -> Any:
        with self._lock:
            if service not in self._made:
                self._made[service] = make_client(service, self.region, self.concurrency + 2)
            return self._made[service]

    @property
    def ssm(self) -> Any:
        return self._get("ssm")

    @property
    def secretsmanager(self) -> Any:
        return self._get("secretsmanager")


class Outcome(BaseModel):
    """What happened to one entry: ``action`` done (or, in a dry run, to be done), ``ok``, and why not.

    Example::

        Outcome(kind="parameter", name="/apps/x/token", action="add", ok=False, detail="AccessDeniedException: ...")
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    name: str
    action: str
    ok: bool = True
    detail: str = ""


class SyncReport(BaseModel):
    """The result of save, sync or nuke: one :class:`Outcome` per entry touched.

    Example::

        report = sync(manifest, prune=True)
        if not report.ok:
            for o in report.failed:
                print(o.name, o.detail)
    """

    command: str
    dry_run: bool = False
    outcomes: list[Outcome] = Field(default_factory=list)
    unchanged: int = 0

    @property
    def succeeded(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def absent(self) -> list[Outcome]:
        """Deletions that found nothing to delete (already gone, or already scheduled for deletion)."""
        return [o for o in self.outcomes if o.ok and o.action.startswith(ABSENT)]

    @property
    def changed(self) -> list[Outcome]:
        """What was (or, in a dry run, would be) actually changed in AWS."""
        return [o for o in self.outcomes if o.ok and not o.action.startswith(ABSENT)]

    def counts(self) -> dict[str, int]:
        return {
            "changed": len(self.changed),
            "already_absent": len(self.absent),
            "failed": len(self.failed),
            "unchanged": self.unchanged,
        }

    def summary(self) -> str:
        done = {"nuke": "deleted", "save": "written"}.get(self.command, "changed")
        verb = f"would be {done}" if self.dry_run else done
        text = f"{self.command}: {len(self.changed)} {verb}"
        if self.absent or self.command == "nuke":
            text += f", {len(self.absent)} already absent"
        text += f", {len(self.failed)} failed"
        if self.command != "nuke":
            text += f", {self.unchanged} unchanged"
        if self.failed and self.changed and not self.dry_run:
            text += " -- AWS is now partly updated; fix the failures and run again"
        return text


#: How deletions that found nothing are worded (and recognised): "already gone", "already gone (...)".
ABSENT = "already gone"


# -- reading ----------------------------------------------------------------------------------------------


def _chunks(items: Sequence[Any], n: int) -> list[Sequence[Any]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def _aws(where: str, e: BaseException) -> AwsCallError:
    code, message = describe_error(e)
    from flytekitplugins_awssecrets.errors import CREDENTIAL_CODES

    hint = ""
    if code in CREDENTIAL_CODES:
        # Invalid, unknown or expired keys: not a missing permission (the same split as task resolution).
        hint = "AWS did not accept the credentials themselves: refresh or replace them (`aws sts get-caller-identity`)"
    elif code in ("AccessDeniedException", "AccessDenied"):
        hint = "the credentials in use lack an IAM permission for this call"
    return AwsCallError(where, message, code, hint)


def _ssm_path(m: Manifest) -> str:
    full = parameter_full_name(m.path, "x")
    return full[: -len("/x")] or "/"


def _read_parameters(m: Manifest, clients: Clients, scope: Scope) -> dict[str, dict[str, Any]]:
    """Values, types, descriptions and KMS keys of the manifest's parameters, read concurrently.

    Every read is independent of the others, so they all run on the pool at once: the wall time is that of
    the longest chain of pages, not the sum of every call (500 parameters are 50 ``GetParameters`` calls
    and 10 or more ``DescribeParameters`` pages; one after the other they cost 60 round trips).
    """
    ssm = clients.ssm
    path = _ssm_path(m)

    def values_by_path() -> list[dict[str, Any]]:
        pages = ssm.get_paginator("get_parameters_by_path").paginate(
            Path=path, Recursive=True, WithDecryption=True, PaginationConfig={"PageSize": 10}
        )
        return [p for page in pages for p in page.get("Parameters", [])]

    def metas_by_path() -> list[dict[str, Any]]:
        pages = ssm.get_paginator("describe_parameters").paginate(
            ParameterFilters=[{"Key": "Path", "Option": "Recursive", "Values": [path]}],
            PaginationConfig={"PageSize": 50},
        )
        return [p for page in pages for p in page.get("Parameters", [])]

    def values_of(batch: Sequence[str]) -> list[dict[str, Any]]:
        return list(ssm.get_parameters(Names=list(batch), WithDecryption=True).get("Parameters", []))

    def metas_of(batch: Sequence[str]) -> list[dict[str, Any]]:
        # Names that do not exist are simply not returned: no need to wait for the values to know which do.
        pages = ssm.get_paginator("describe_parameters").paginate(
            ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": list(batch)}],
            PaginationConfig={"PageSize": 50},
        )
        return [p for page in pages for p in page.get("Parameters", [])]

    if scope == "path":
        value_reads: list[Callable[[], list[dict[str, Any]]]] = [values_by_path]
        meta_reads: list[Callable[[], list[dict[str, Any]]]] = [metas_by_path]
    else:
        names = [parameter_full_name(m.path, p.name) for p in m.parameters]
        value_reads = [functools.partial(values_of, b) for b in _chunks(names, GET_PARAMETERS_BATCH)]
        meta_reads = [functools.partial(metas_of, b) for b in _chunks(names, DESCRIBE_FILTER_BATCH)]
    reads = value_reads + meta_reads
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(clients.concurrency, len(reads)))) as pool:
            results = list(pool.map(lambda read: read(), reads))
    except Exception as e:  # noqa: BLE001 - one typed error for every AWS/network failure
        raise _aws(f"SSM parameters under {path}", e) from None
    found: dict[str, dict[str, Any]] = {}
    for p in (p for got in results[: len(value_reads)] for p in got):
        found[p["Name"]] = {"Type": p["Type"], "Value": p["Value"]}
    for meta in (meta for got in results[len(value_reads) :] for meta in got):
        if meta["Name"] in found:
            found[meta["Name"]]["Description"] = meta.get("Description", "")
            found[meta["Name"]]["KeyId"] = meta.get("KeyId")
    return found


def _parameter_tags(clients: Clients, names: Sequence[str]) -> dict[str, dict[str, str]]:
    def one(name: str) -> tuple[str, dict[str, str]]:
        try:
            resp = clients.ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)
        except Exception as e:  # noqa: BLE001
            raise _aws(f"tags of {name}", e) from None
        return name, {t["Key"]: t["Value"] for t in resp.get("TagList", [])}

    with ThreadPoolExecutor(max_workers=clients.concurrency) as pool:
        return dict(pool.map(one, names))


def _read_secrets(m: Manifest, clients: Clients, only: set[str] | None = None) -> dict[str, dict[str, Any]]:
    sm = clients.secretsmanager
    prefix = secret_full_name(m.path, "x")[:-1]  # "apps/superman/" ("" at the root)
    found: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"Filters": [{"Key": "name", "Values": [prefix]}]} if prefix else {}
    try:
        for page in sm.get_paginator("list_secrets").paginate(**kwargs):
            for s in page.get("SecretList", []):
                # The name filter is a case-insensitive prefix match: keep exact prefixes only.
                if s["Name"].startswith(prefix) and (only is None or s["Name"] in only):
                    found[s["Name"]] = {
                        "Description": s.get("Description") or "",
                        "KmsKeyId": s.get("KmsKeyId"),
                        "Tags": {t["Key"]: t["Value"] for t in s.get("Tags", [])},
                    }
        for batch in _chunks(sorted(found), BATCH_GET_SECRETS):
            resp = sm.batch_get_secret_value(SecretIdList=list(batch))
            for v in resp.get("SecretValues", []):
                if "SecretString" in v:
                    found[v["Name"]]["Value"] = v["SecretString"]
                else:
                    found[v["Name"]]["Value"] = None  # binary: never equal to a file value
            for err in resp.get("Errors", []):
                if err.get("ErrorCode") != "ResourceNotFoundException":
                    raise AwsCallError(
                        f"secret {err.get('SecretId')}",
                        describe_error(_Coded(err))[1],
                        err.get("ErrorCode", ""),
                    )
    except AwsCallError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _aws(f"secrets named {prefix}*", e) from None
    return {k: v for k, v in found.items() if "Value" in v}


class _Coded(Exception):
    """Adapts a BatchGetSecretValue error item to what :func:`describe_error` reads."""

    def __init__(self, item: dict[str, Any]) -> None:
        super().__init__()
        self.response = {"Error": {"Code": item.get("ErrorCode", ""), "Message": item.get("Message", "")}}


def read_remote(
    m: Manifest, clients: Clients | None = None, scope: Scope = "path"
) -> dict[tuple[str, str], Entry]:
    """What AWS holds for the manifest: everything under ``path`` (``scope="path"``) or only what it lists."""
    clients = clients or Clients(m.region)
    out: dict[tuple[str, str], Entry] = {}
    if m.parameters or scope == "path":
        params = _read_parameters(m, clients, scope)
        tags = _parameter_tags(clients, sorted(params)) if m.tags is not None else {}
        for name, p in params.items():
            out[("parameter", name)] = Entry(
                kind="parameter",
                name=name,
                type=p["Type"],
                value=SecretStr(p["Value"]),
                description=p.get("Description") or "",
                kms_key=p.get("KeyId") if p["Type"] == "SecureString" else None,
                tags=tags.get(name),
            )
    if m.secrets or scope == "path":
        only = {secret_full_name(m.path, s.name) for s in m.secrets} if scope == "listed" else None
        for name, s in _read_secrets(m, clients, only).items():
            value = s["Value"]
            out[("secret", name)] = Entry(
                kind="secret",
                name=name,
                type="binary" if value is None else "string",
                value=SecretStr("" if value is None else value),
                description=s["Description"],
                kms_key=s["KmsKeyId"],
                tags=s["Tags"],
            )
    return out


def plan(m: Manifest, clients: Clients | None = None, scope: Scope = "path") -> list[Change]:
    """The changes that make AWS match a *decrypted* manifest (``remove`` only with ``scope="path"``).

    With ``path: /`` the path scope would be the whole account, so only the listed entries are compared.
    """
    if not _ssm_path(m).strip("/"):
        scope = "listed"
    desired = desired_entries(m)
    from flytekitplugins_awssecrets.manifest.progress import reading

    where = f"everything under {m.path}" if scope == "path" else f"the {len(desired)} listed entries"
    with reading(where) as found:
        remote = read_remote(m, clients, scope)
        kinds = [k for k, _ in remote]
        found(f"{kinds.count('parameter')} parameters, {kinds.count('secret')} secrets ({where})")
    if scope == "path":
        return compare(desired, remote, prune_scope=True)
    return compare(desired, remote, prune_scope=False)


# -- writing ----------------------------------------------------------------------------------------------


def _put_parameter(clients: Clients, e: Entry, change: Change | None) -> str:
    ssm = clients.ssm
    if change is None or change.action in ("add", "update"):
        kwargs: dict[str, Any] = {
            "Name": e.name,
            "Value": e.value.get_secret_value(),
            "Type": e.type,  # always SSM's spelling: the model maps psyml's lowercase forms
            "Overwrite": True,
            "Description": e.description,
        }
        if e.type == "SecureString" and e.kms_key:
            kwargs["KeyId"] = e.kms_key
        ssm.put_parameter(**kwargs)
    if change is None:
        if e.tags:
            ssm.add_tags_to_resource(
                ResourceType="Parameter",
                ResourceId=e.name,
                Tags=[{"Key": k, "Value": v} for k, v in sorted(e.tags.items())],
            )
        return "written"
    if change.tags_set:
        ssm.add_tags_to_resource(
            ResourceType="Parameter",
            ResourceId=e.name,
            Tags=[{"Key": k, "Value": v} for k, v in sorted(change.tags_set.items())],
        )
    if change.tags_removed:
        ssm.remove_tags_from_resource(
            ResourceType="Parameter", ResourceId=e.name, TagKeys=change.tags_removed
        )
    return _done(change)


def _done(change: Change) -> str:
    if change.action == "add":
        return "added"
    if change.action == "tags":
        return "tags updated"
    return "updated " + ", ".join(
        change.fields + (["tags"] if change.tags_set or change.tags_removed else [])
    )


def _put_secret(clients: Clients, e: Entry, change: Change | None) -> str:
    sm = clients.secretsmanager
    value = e.value.get_secret_value()
    fields = ["value", "description", "kmskey"] if change is None else change.fields
    tags_set = dict(e.tags or {}) if change is None else change.tags_set
    if change is None or change.action == "add":
        kwargs: dict[str, Any] = {"Name": e.name, "SecretString": value}
        if e.description:
            kwargs["Description"] = e.description
        if e.kms_key:
            kwargs["KmsKeyId"] = e.kms_key
        if e.tags:
            kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in sorted(e.tags.items())]
        try:
            sm.create_secret(**kwargs)
            return "added" if change else "written"
        except Exception as exc:  # noqa: BLE001
            code = error_code(exc)
            if _scheduled_for_deletion(exc):
                # Deleted earlier (e.g. by nuke) and still in its recovery window: bring it back, then update.
                sm.restore_secret(SecretId=e.name)
            elif code != "ResourceExistsException":
                raise
            fields = ["value", "description", "kmskey"]
            tags_set = dict(e.tags or {})

    def apply() -> None:
        if "value" in fields:
            sm.put_secret_value(SecretId=e.name, SecretString=value)
        if "description" in fields or ("kmskey" in fields and e.kms_key):
            upd: dict[str, Any] = {"SecretId": e.name, "Description": e.description}
            if e.kms_key:
                upd["KmsKeyId"] = e.kms_key
            sm.update_secret(**upd)
        if tags_set:
            sm.tag_resource(
                SecretId=e.name, Tags=[{"Key": k, "Value": v} for k, v in sorted(tags_set.items())]
            )
        if change is not None and change.tags_removed:
            sm.untag_resource(SecretId=e.name, TagKeys=change.tags_removed)

    try:
        apply()
    except Exception as exc:  # noqa: BLE001
        if not _scheduled_for_deletion(exc):
            raise
        # The file lists it, so it is wanted: cancel the scheduled deletion and write again.
        sm.restore_secret(SecretId=e.name)
        apply()
    return "written" if change is None else _done(change)


def _scheduled_for_deletion(exc: BaseException) -> bool:
    # AWS: InvalidRequestException "...scheduled for deletion"; moto: ResourceExists / "marked deleted".
    return error_code(exc) == "InvalidRequestException" and "delet" in str(exc).lower()


def _delete_secret(clients: Clients, name: str, recovery_days: int | None) -> str:
    kwargs: dict[str, Any] = {"SecretId": name}
    if recovery_days is None:
        kwargs["ForceDeleteWithoutRecovery"] = True
    else:
        kwargs["RecoveryWindowInDays"] = recovery_days
    try:
        clients.secretsmanager.delete_secret(**kwargs)
    except Exception as exc:  # noqa: BLE001
        code = error_code(exc)
        if code == "ResourceNotFoundException":
            return "already gone"
        if _scheduled_for_deletion(exc):
            return "already gone (scheduled for deletion)"
        raise
    return "deleted" if recovery_days is None else f"scheduled for deletion in {recovery_days} days"


Task = tuple[
    str, str, str, Callable[[], str], Sequence[str]
]  # kind, name, planned action, do it, values to scrub


def _run(tasks: list[Task], clients: Clients, dry_run: bool, progress: bool | None) -> list[Outcome]:
    if dry_run:
        return [Outcome(kind=k, name=n, action=a) for k, n, a, _, _ in tasks]

    def one(task: Task) -> Outcome:
        kind, name, action, fn, values = task
        try:
            return Outcome(kind=kind, name=name, action=fn())
        except Exception as e:  # noqa: BLE001 - recorded per entry; the others go on
            return Outcome(kind=kind, name=name, action=action, ok=False, detail=describe_error(e, values)[1])

    # Progress counts entries, not tasks: a DeleteParameters task deletes up to 10 of them.
    total = sum(_entries_of(t) for t in tasks)
    show = progress if progress is not None else (sys.stderr.isatty() and total >= PROGRESS_MIN)
    results: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=max(1, clients.concurrency)) as pool:
        futures = [pool.submit(one, t) for t in tasks]
        weights = {id(f): _entries_of(t) for t, f in zip(tasks, futures, strict=True)}
        if show and tasks and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            ) as bar:
                tid = bar.add_task("writing", total=total)
                for f in futures:
                    results.append(f.result())
                    bar.advance(tid, weights[id(f)])
        elif progress is not False and (show or total >= PROGRESS_MIN):
            results = _with_progress_lines(futures, weights)
        else:
            results = [f.result() for f in futures]
    return results


#: Without a terminal, a long run prints one progress line this often (seconds), and one at the end.
PROGRESS_INTERVAL = 10.0


def _entries_of(task: Task) -> int:
    """How many manifest entries a task writes or deletes (a parameter batch holds one name per line)."""
    return task[1].count("\n") + 1 if task[0] == "parameter-batch" else 1


def _with_progress_lines(futures: list[Any], weights: dict[int, int] | None = None) -> list[Outcome]:
    """Wait for ``futures``, printing ``N/M done, K failed`` on stderr every PROGRESS_INTERVAL seconds, so a
    long run in CI shows that it is alive and how far it got."""
    import time
    from concurrent.futures import FIRST_COMPLETED, wait

    weights = weights or {}
    total = sum(weights.get(id(f), 1) for f in futures)
    pending = set(futures)
    start = last = time.monotonic()
    while pending:
        _, pending = wait(pending, timeout=max(0.01, PROGRESS_INTERVAL), return_when=FIRST_COMPLETED)
        now = time.monotonic()
        if now - last >= PROGRESS_INTERVAL or not pending:
            last = now
            done = [(f.result(), weights.get(id(f), 1)) for f in futures if f.done()]
            failed = sum(w for o, w in done if not o.ok)
            print(
                f"progress: {sum(w for _, w in done)}/{total} done, {failed} failed ({now - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    return [f.result() for f in futures]


def _entry_task(clients: Clients, e: Entry, change: Change | None) -> Task:
    writer = _put_parameter if e.kind == "parameter" else _put_secret
    action = "write" if change is None else change.action
    return (e.kind, e.name, action, lambda: writer(clients, e, change), [e.value.get_secret_value()])


def save(
    m: Manifest,
    clients: Clients | None = None,
    *,
    dry_run: bool = False,
    progress: bool | None = None,
) -> SyncReport:
    """Write every entry of a *decrypted* manifest (psyml's ``save``): values, descriptions, keys, tags."""
    clients = clients or Clients(m.region)
    tasks = [_entry_task(clients, e, None) for e in desired_entries(m)]
    return SyncReport(command="save", dry_run=dry_run, outcomes=_run(tasks, clients, dry_run, progress))


def sync(
    m: Manifest,
    clients: Clients | None = None,
    *,
    prune: bool = False,
    dry_run: bool = False,
    recovery_days: int | None = 7,
    progress: bool | None = None,
    confirm_removals: Callable[[list[Change]], bool] | None = None,
) -> SyncReport:
    """Write only what differs; with ``prune``, delete what is under ``path`` but not in the file.

    ``recovery_days`` is the Secrets Manager recovery window for pruned secrets (``None``: delete at once).
    ``confirm_removals`` is asked before anything is written when the plan deletes something; if it answers
    False the removals are dropped from the run (the command line refuses instead, see ``sync --yes``).
    """
    if prune and not _ssm_path(m).strip("/"):
        # Pruning "everything under /" would delete every parameter and secret in the account.
        raise ValueError(
            "--prune needs a `path` below the root: with path '/' it would delete the whole account"
        )
    clients = clients or Clients(m.region)
    desired = {e.key: e for e in desired_entries(m)}
    changes = plan(m, clients, "path" if prune else "listed")
    tasks: list[Task] = []
    removals: list[Change] = []
    for c in changes:
        if c.action == "remove":
            removals.append(c)
        else:
            tasks.append(_entry_task(clients, desired[(c.kind, c.name)], c))
    if removals and not dry_run and confirm_removals is not None and not confirm_removals(removals):
        removals = []
    tasks.extend(_deletion_tasks(clients, [(c.kind, c.name) for c in removals], recovery_days, "remove"))
    outcomes = _expand_batches(_run(tasks, clients, dry_run, progress))
    unchanged = len(desired) - len([c for c in changes if c.action != "remove"])
    return SyncReport(command="sync", dry_run=dry_run, outcomes=outcomes, unchanged=unchanged)


def _deletion_tasks(
    clients: Clients, targets: Sequence[tuple[str, str]], recovery_days: int | None, action: str
) -> list[Task]:
    tasks: list[Task] = []
    params = [n for k, n in targets if k == "parameter"]
    for batch in _chunks(params, GET_PARAMETERS_BATCH):
        # DeleteParameters takes 10 names and reports the ones that were already gone; one task per batch,
        # expanded into per-name outcomes afterwards.
        tasks.append(("parameter-batch", "\n".join(batch), action, _batch_deleter(clients, list(batch)), ()))
    for k, n in targets:
        if k == "secret":
            tasks.append(("secret", n, action, lambda n=n: _delete_secret(clients, n, recovery_days), ()))  # type: ignore[misc]
    return tasks


def _batch_deleter(clients: Clients, names: list[str]) -> Callable[[], str]:
    def run() -> str:
        resp = clients.ssm.delete_parameters(Names=names)
        gone = set(resp.get("InvalidParameters", []))
        return "\n".join("already gone" if n in gone else "deleted" for n in names)

    return run


def _expand_batches(outcomes: list[Outcome]) -> list[Outcome]:
    out: list[Outcome] = []
    for o in outcomes:
        if o.kind != "parameter-batch":
            out.append(o)
            continue
        names = o.name.split("\n")
        actions = (
            o.action.split("\n")
            if o.ok and o.action.count("\n") == len(names) - 1
            else [o.action] * len(names)
        )
        out.extend(
            Outcome(kind="parameter", name=n, action=a, ok=o.ok, detail=o.detail)
            for n, a in zip(names, actions, strict=True)
        )
    return out


def nuke(
    m: Manifest,
    clients: Clients | None = None,
    *,
    dry_run: bool = False,
    recovery_days: int | None = 7,
    progress: bool | None = None,
) -> SyncReport:
    """Delete every entry the file lists; entries already gone are reported, not errors."""
    clients = clients or Clients(m.region)
    targets = [("parameter", parameter_full_name(m.path, p.name)) for p in m.parameters]
    targets += [("secret", secret_full_name(m.path, s.name)) for s in m.secrets]
    if dry_run:
        # Say what would really happen: entries that do not exist would not be deleted.
        from flytekitplugins_awssecrets.manifest.progress import reading

        with reading(f"the names of the {len(targets)} listed entries") as found:
            present = _existing(clients, targets)
            found(f"the names of the {len(targets)} listed entries ({len(present)} exist)")
        outcomes = [
            Outcome(kind=k, name=n, action="delete" if (k, n) in present else ABSENT) for k, n in targets
        ]
        return SyncReport(command="nuke", dry_run=True, outcomes=outcomes)
    tasks = _deletion_tasks(clients, targets, recovery_days, "delete")
    outcomes = _expand_batches(_run(tasks, clients, dry_run, progress))
    return SyncReport(command="nuke", dry_run=dry_run, outcomes=outcomes)


def _existing(clients: Clients, targets: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of ``targets`` exist (names only: DescribeParameters and DescribeSecret, no values, no KMS)."""
    params = [n for k, n in targets if k == "parameter"]
    secrets = [n for k, n in targets if k == "secret"]

    def params_of(batch: Sequence[str]) -> list[tuple[str, str]]:
        pages = clients.ssm.get_paginator("describe_parameters").paginate(
            ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": list(batch)}],
            PaginationConfig={"PageSize": 50},
        )
        return [("parameter", p["Name"]) for page in pages for p in page.get("Parameters", [])]

    def secret_of(name: str) -> list[tuple[str, str]]:
        try:
            r = clients.secretsmanager.describe_secret(SecretId=name)
        except Exception as e:  # noqa: BLE001
            if error_code(e) == "ResourceNotFoundException":
                return []
            raise
        return [] if r.get("DeletedDate") else [("secret", name)]

    reads: list[Callable[[], list[tuple[str, str]]]] = [
        functools.partial(params_of, b) for b in _chunks(params, DESCRIBE_FILTER_BATCH)
    ]
    reads += [functools.partial(secret_of, n) for n in secrets]
    if not reads:
        return set()
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(clients.concurrency, len(reads)))) as pool:
            return {t for got in pool.map(lambda read: read(), reads) for t in got}
    except Exception as e:  # noqa: BLE001
        raise _aws("entries listed in the manifest", e) from None
