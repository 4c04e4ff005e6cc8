"""Tiering through Blob Batch vs one call per blob, measured in the same run on the same store.

    .venv/bin/python bench/bench_retention.py [--blobs 10000] [--threads 8]

Creates ``--blobs`` small blobs (5000 backups of db.dump + manifest.json) in a scratch container,
then changes the tier of every blob three times: with one ``set_standard_blob_tier`` call per blob
(Hot -> Cool, the peer), then through :class:`RetentionStore` in Blob Batches of 256, one batch at a
time (Cool -> Cold) and four in flight (Cold -> Archive). Each move is the same kind of work for the
store. Prints times and the ratios (goal: >= 20x).
The local Azurite of the configured stack is brought up if needed; the scratch container is deleted.
Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.retention_store import OutcomeStatus, RetentionStore, backup_blob_names
from continuity.kernel import settings
from continuity.kernel.tenants import StorageTier
from continuity.retention.planner import SetTier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=10_000, help="blobs to tier (even number; default 10000)")
    parser.add_argument("--threads", type=int, default=8, help="threads used only to create the blobs")
    args = parser.parse_args()

    settings.load_local_settings()
    if not settings.get("CONTINUITY_STORAGE_CONNECTION"):
        from continuity.adapters.local.local_stack import LocalStack

        LocalStack().up_azurite()
    store = BlobStore()
    name = f"bench-retention-{uuid.uuid4().hex[:8]}"
    container = store.container(name)
    container.create_container()
    try:
        created = datetime(2026, 1, 1, tzinfo=UTC)
        actions = [SetTier(tenant="bench", backup_id=f"b{i:05d}", created_at=created + timedelta(minutes=i),
                           to=StorageTier.COLD, reason="tier cold: bench") for i in range(args.blobs // 2)]
        names = [n for a in actions for n in backup_blob_names(a)]
        started = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(lambda n: container.upload_blob(n, b"x" * 64, overwrite=True), names))
        print(f"created {len(names)} blobs in {time.perf_counter() - started:.1f} s "
              f"(store: {'Azurite' if store.is_azurite else 'Azure Storage'})")

        started = time.perf_counter()
        for blob in names:
            container.get_blob_client(blob).set_standard_blob_tier("Cool")
        per_blob = time.perf_counter() - started

        runs: list[tuple[str, RetentionStore, float]] = []
        for concurrency, tier in ((1, StorageTier.COLD), (4, StorageTier.ARCHIVE)):
            applier = RetentionStore(container, batch_concurrency=concurrency)
            started = time.perf_counter()
            outcomes = applier.apply([replace(a, to=tier) for a in actions])
            runs.append((f"blob batch x{concurrency}", applier, time.perf_counter() - started))
            failed = [o for o in outcomes if o.status is not OutcomeStatus.APPLIED]
            tiers = {str(b.blob_tier) for b in container.list_blobs()}
            if failed or tiers != {tier.value.capitalize()}:
                raise SystemExit(f"the batched run did not tier every blob ({len(failed)} not applied, tiers "
                                 f"{sorted(tiers)}): its ratio would not be valid")

        print(f"load average      : {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
        print(f"one call per blob : {len(names)} calls in {per_blob:8.2f} s ({len(names) / per_blob:8.0f} blobs/s)")
        for label, applier, seconds in runs:
            print(f"{label:<18}: {applier.batches_sent} calls in {seconds:8.2f} s ({len(names) / seconds:8.0f} "
                  f"blobs/s)  ratio {per_blob / seconds:5.1f}x (goal >= 20x)")
        print("check             : every batched action APPLIED and every blob read back in its new tier")
    finally:
        container.delete_container()


if __name__ == "__main__":
    main()
