"""Fixtures shared by the integration tests of one capability (the session's stack is in ``tests/conftest.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.connection import connect, ensure_database
from continuity.adapters.postgres.control_db import migrate
from continuity.adapters.storage.blob_store import BlobStore


@pytest.fixture
def fresh(stack: LocalStack, blob_store: BlobStore) -> Iterator[tuple[str, str]]:
    """A control database and an evidence container of its own, so each test starts an empty chain."""
    suffix = uuid.uuid4().hex[:10]
    dbname, container = f"ev_{suffix}", f"evidence-{suffix}"
    ensure_database(stack.dsn("control"), dbname)
    dsn = stack.dsn("control", dbname)
    migrate(dsn)
    blob_store.ensure_containers([container])
    yield dsn, container
    blob_store.container(container).delete_container()
    with connect(stack.dsn("control")) as conn:
        conn.execute(f"drop database if exists {dbname} with (force)")
