"""Blob storage: backups, attachments and evidence containers (Azure Storage or Azurite).

Azurite lacks immutability policies and legal holds; callers ask :meth:`BlobStore.enforces_immutability`
and report "not enforced by this store" instead of pretending.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import IO, Any, cast

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError, ServiceRequestError
from azure.storage.blob import BlobServiceClient, ContainerClient

from continuity.kernel import settings
from continuity.kernel.errors import BackupNotFound, StoreUnavailable

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 30


class BlobStore:
    """One storage account. Every call has a timeout; SDK errors become :class:`StoreUnavailable`."""

    def __init__(self, connection_string: str | None = None) -> None:
        self.connection_string = connection_string or settings.storage_connection_string()
        self.service = BlobServiceClient.from_connection_string(
            self.connection_string, connection_timeout=5, read_timeout=TIMEOUT_SECONDS,
            retry_total=2, retry_backoff_factor=0.2,
            # The storage SDK's own ExponentialRetry waits 15 s, then 18 s: "storage down" took ~45 s to say so.
            initial_backoff=1, increment_base=2,
        )

    @property
    def is_azurite(self) -> bool:
        return "devstoreaccount1" in self.connection_string

    def enforces_immutability(self) -> bool:
        # Azurite has no immutability policies or legal holds: report "not enforced", never pretend.
        return not self.is_azurite

    def container(self, name: str) -> ContainerClient:
        return self.service.get_container_client(name)

    def ensure_containers(self, names: Iterable[str]) -> None:
        for name in names:
            try:
                self.container(name).create_container(timeout=TIMEOUT_SECONDS)
            except ResourceExistsError:
                pass
            except (ServiceRequestError, AzureError) as exc:
                raise unavailable(exc) from exc

    def upload(self, container: str, name: str, data: bytes | IO[bytes], *, tags: dict[str, str] | None = None,
               metadata: dict[str, str] | None = None, overwrite: bool = True, length: int | None = None) -> Any:
        body = data
        if not isinstance(data, bytes) and length is None:
            body = cast("bytes | IO[bytes]", _NonEmptyOrBytes.of(data))  # a readable stream, as the SDK reads it
        try:
            return self.container(container).upload_blob(
                name, body, length=length, overwrite=overwrite, tags=tags, metadata=metadata,
                max_concurrency=2, timeout=600,
            )
        except ResourceExistsError:
            raise
        except AzureError as exc:
            raise unavailable(exc) from exc

    def upload_once(self, container: str, name: str, data: bytes, *, tags: dict[str, str] | None = None) -> bytes:
        """Write the blob unless it exists; returns what is stored (a re-run keeps the first write)."""
        try:
            self.upload(container, name, data, tags=tags, overwrite=False)
        except ResourceExistsError:
            return self.download(container, name)
        return data

    def download(self, container: str, name: str) -> bytes:
        try:
            return bytes(self.container(container).download_blob(name, timeout=600).readall())
        except ResourceNotFoundError as exc:
            raise BackupNotFound(f"blob {container}/{name} does not exist") from exc
        except AzureError as exc:
            raise unavailable(exc) from exc

    def iter_chunks(self, container: str, name: str) -> Iterator[bytes]:
        """Stream a blob in chunks without holding it in memory."""
        try:
            downloader = self.container(container).download_blob(name, timeout=600, max_concurrency=1)
            yield from downloader.chunks()
        except ResourceNotFoundError as exc:
            raise BackupNotFound(f"blob {container}/{name} does not exist") from exc
        except AzureError as exc:
            raise unavailable(exc) from exc

    def exists(self, container: str, name: str) -> bool:
        try:
            return bool(self.container(container).get_blob_client(name).exists(timeout=TIMEOUT_SECONDS))
        except AzureError as exc:
            raise unavailable(exc) from exc

    def list_names(self, container: str, prefix: str | None = None) -> list[str]:
        try:
            return [b.name for b in self.container(container).list_blobs(name_starts_with=prefix,
                                                                         timeout=TIMEOUT_SECONDS)]
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise unavailable(exc) from exc

    def list_with_times(self, container: str, prefix: str | None = None) -> list[tuple[str, int, datetime]]:
        """(name, size, last modified) of every blob under ``prefix``: when storage received each."""
        try:
            return [(b.name, int(b.size or 0), b.last_modified)
                    for b in self.container(container).list_blobs(name_starts_with=prefix, timeout=TIMEOUT_SECONDS)]
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise unavailable(exc) from exc

    def get_tags(self, container: str, name: str) -> dict[str, str]:
        try:
            return dict(self.container(container).get_blob_client(name).get_blob_tags(timeout=TIMEOUT_SECONDS))
        except ResourceNotFoundError as exc:
            raise BackupNotFound(f"blob {container}/{name} does not exist") from exc
        except AzureError as exc:
            raise unavailable(exc) from exc

    def set_tags(self, container: str, name: str, tags: dict[str, str]) -> None:
        try:
            self.container(container).get_blob_client(name).set_blob_tags(tags, timeout=TIMEOUT_SECONDS)
        except ResourceNotFoundError as exc:
            raise BackupNotFound(f"blob {container}/{name} does not exist") from exc
        except AzureError as exc:
            raise unavailable(exc) from exc

    def delete(self, container: str, name: str) -> None:
        """Delete a blob; succeeds if it is already gone."""
        try:
            self.container(container).delete_blob(name, timeout=TIMEOUT_SECONDS)
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise unavailable(exc) from exc


def unavailable(exc: Exception) -> StoreUnavailable:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreUnavailable(f"blob storage unavailable: {first[:300]}; is Azurite up (`continuity local status`) "
                            "or the storage connection setting right?")


class _NonEmptyOrBytes:
    """A stream that is known to hold at least one byte, or ``b""`` instead of it.

    azure-storage-blob (12.x) uploads a stream of unknown length in parallel chunks and never returns when the
    stream is empty: ``_parallel_uploads`` waits on an empty set of futures and loops without end. A pg_dump that
    fails before writing anything gives exactly that stream, and `continuity backup` hung. So the first chunk is
    read here; an empty stream is uploaded as ``b""`` (the caller then sees the failure for what it is).
    """

    def __init__(self, raw: IO[bytes], first: bytes) -> None:
        self._raw = raw
        self._first = first

    @classmethod
    def of(cls, raw: IO[bytes]) -> _NonEmptyOrBytes | bytes:
        first = raw.read(4 * 1024 * 1024)
        return cls(raw, first) if first else b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        if self._first:
            if size is None or size < 0:
                data, self._first = self._first + self._raw.read(), b""
                return data
            data, self._first = self._first[:size], self._first[size:]
            return data
        return self._raw.read(size)
