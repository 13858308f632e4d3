"""One task of every type that runs flytekit in its pod, each reading the same AWS secret.

Each returns (or, for the shell task, checks) the secret's fingerprint, never the value. The secret's ARN is
built from ``TT_PREFIX`` so that each test run uses its own secret in moto.
"""

from __future__ import annotations

import hashlib
import os
import typing

from flytekit import Secret, current_context, dynamic, map_task, task, workflow
from flytekit.core.interface import Interface
from flytekit.core.python_customized_container_task import PythonCustomizedContainerTask
from flytekit.core.shim_task import ShimTaskExecutor
from flytekit.extras.sqlite3.task import SQLite3Config, SQLite3Task
from flytekit.extras.tasks.shell import ShellTask
from flytekit.models import task as task_models

from flytekitplugins_awssecrets import aws_secret

PREFIX = os.environ.get("TT_PREFIX", "tt")
ARN = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{PREFIX}/value"
ANY = aws_secret(ARN)
ENV = aws_secret(ARN, mount_requirement=Secret.MountType.ENV_VAR, env_var="TT_SECRET")
# The form seed 002 and the AWS webhook accept: the group without its trailing ':'.
NO_COLON = Secret(group=ANY.group.rstrip(":"), key=ANY.key, mount_requirement=Secret.MountType.FILE)


def fp(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return f"len={len(data)} sha256={hashlib.sha256(data).hexdigest()[:12]}"


@task(secret_requests=[ANY, NO_COLON])
def plain() -> str:
    sm = current_context().secrets
    got = sm.get(ANY.group, ANY.key)
    with open(sm.get_secrets_file(ANY.group, ANY.key)) as f:
        from_file = f.read()
    from_env = os.environ[sm.get_secrets_env_var(ANY.group, ANY.key)]
    with open(sm.get_secrets_file(NO_COLON.group, NO_COLON.key)) as f:
        no_colon = f.read()
    return " ".join(
        ["any=" + fp(got), "file=" + fp(from_file), "env=" + fp(from_env), "nocolon=" + fp(no_colon)]
    )


@task(secret_requests=[ANY])
def one(x: int) -> str:
    return fp(current_context().secrets.get(ANY.group, ANY.key))


mapped = map_task(one)


@dynamic(secret_requests=[ANY])
def dyn() -> str:
    return fp(current_context().secrets.get(ANY.group, ANY.key))


shell = ShellTask(
    name="tt_shell",
    script='[ "$(printf %s "$TT_SECRET" | sha256sum | cut -c1-12)" = "$TT_EXPECTED" ]',
    secret_requests=[ENV],
)


class SecretShimExecutor(ShimTaskExecutor["SecretShimTask"]):
    """A third-party-style shim: the executor reads the secret from the template alone."""

    def execute_from_model(self, tt: task_models.TaskTemplate, **kwargs: typing.Any) -> typing.Any:
        return fp(current_context().secrets.get(ANY.group, ANY.key))


class SecretShimTask(PythonCustomizedContainerTask[None]):  # type: ignore[type-var]
    def __init__(self, name: str, **kwargs: typing.Any) -> None:
        super().__init__(
            name=name,
            task_config=None,
            container_image="registry.example/app:1",
            executor_type=SecretShimExecutor,
            task_type="secret-shim",
            interface=Interface(inputs={}, outputs={"o0": str}),
            **kwargs,
        )

    def get_custom(self, settings: typing.Any) -> dict[str, typing.Any]:
        return {}


shim = SecretShimTask(name="tt_shim", secret_requests=[ANY])

sqlite = SQLite3Task(
    name="tt_sqlite",
    query_template="SELECT 1",
    task_config=SQLite3Config(uri=os.environ.get("TT_SQLITE_URI", "file:///nonexistent.db")),
    output_schema_type=None,  # the DataFrame is not uploaded (no pyarrow needed)
    secret_requests=[ANY],
)


@workflow
def mapped_wf() -> list[str]:
    return mapped(x=[1, 2])


@workflow
def shell_wf() -> None:
    shell()


ISO = aws_secret(f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{PREFIX}/iso")

try:  # flytekitplugins-sqlalchemy: a third-party shim task whose executor reads secret_connect_args
    from flytekitplugins.sqlalchemy import SQLAlchemyConfig, SQLAlchemyTask

    sqlalchemy_task = SQLAlchemyTask(
        name="tt_sqlalchemy",
        query_template="SELECT 1",
        task_config=SQLAlchemyConfig(uri="sqlite://", secret_connect_args={"isolation_level": ISO}),
        output_schema_type=None,
        secret_requests=[ISO],
    )
except ImportError:  # not in every compatibility venv
    pass

try:  # flytekit >= 1.15
    from flytekit import eager

    @eager(secret_requests=[ANY])
    async def eag() -> str:
        return fp(current_context().secrets.get(ANY.group, ANY.key))

except ImportError:
    pass
