"""Fixtures every Aptible test shares: the bot's password and email, and a fake Aptible server seeded with
them. Loaded by ``tests/conftest.py`` as a pytest plugin; a test module that needs another seed defines its
own ``fake``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fingerprint, new_value
from tests.support.fake_aptible import FakeAptible, standard_seed, start_fake_aptible


class Password(str):
    """The bot password; its repr is a fingerprint so a failing test's report never shows it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<password {fingerprint(str(self))}>"


@pytest.fixture
def bot_password() -> str:
    return Password(new_value("aptible-pw"))


@pytest.fixture
def bot_email(unique: str) -> str:
    return f"bot-{unique}@example.com"


@pytest.fixture
def fake(tmp_path: Path, bot_password: str, bot_email: str) -> Iterator[FakeAptible]:
    server = start_fake_aptible(standard_seed(bot_password, bot_email=bot_email), str(tmp_path / "seed.json"))
    yield server
    server.stop()
