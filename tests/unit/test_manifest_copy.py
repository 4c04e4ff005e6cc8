"""The manifest's copy in its blob's metadata: what the backup job writes and what a catalog rebuild reads back."""

from __future__ import annotations

import base64
import json
import os
import zlib

import pytest

from continuity.catalog.manifest import (
    MANIFEST_COPY_CHUNK,
    MANIFEST_COPY_KEY,
    MANIFEST_COPY_LIMIT,
    ManifestCopyUnusable,
    manifest_copy_metadata,
    manifest_from_copy,
)
from tests.unit.test_catalog import make_manifest


def manifest_bytes(**overrides: object) -> bytes:
    return json.dumps(make_manifest(**overrides), indent=2).encode()  # type: ignore[arg-type]


def test_copy_round_trips_byte_for_byte() -> None:
    data = manifest_bytes()
    metadata = manifest_copy_metadata(data)
    assert list(metadata) == [f"{MANIFEST_COPY_KEY}0"]
    assert manifest_from_copy(metadata) == data


def test_copy_of_a_larger_manifest_is_split_into_parts_and_read_back_in_order() -> None:
    # Incompressible enough to need several parts, small enough to stay under the limit.
    data = manifest_bytes(warnings=[base64.b64encode(os.urandom(900)).decode() for _ in range(3)])
    metadata = manifest_copy_metadata(data)
    assert len(metadata) > 1 and all(len(v) <= MANIFEST_COPY_CHUNK for v in metadata.values())
    assert sum(len(k) + len(v) for k, v in metadata.items()) <= MANIFEST_COPY_LIMIT
    reordered = dict(reversed(list(metadata.items())))
    assert manifest_from_copy(reordered) == data
    # Metadata names are case-insensitive: storage may hand them back in another case.
    assert manifest_from_copy({k.upper(): v for k, v in metadata.items()}) == data


def test_copy_is_omitted_when_it_would_not_stay_well_inside_the_metadata_limit() -> None:
    data = manifest_bytes(warnings=[base64.b64encode(os.urandom(6000)).decode()])
    assert manifest_copy_metadata(data) == {}


def test_no_copy_in_metadata_means_none() -> None:
    assert manifest_from_copy({}) is None
    assert manifest_from_copy({"owner": "someone"}) is None


@pytest.mark.parametrize(("metadata", "reason"), [
    ({f"{MANIFEST_COPY_KEY}0": "not base64!"}, "does not decode"),
    ({f"{MANIFEST_COPY_KEY}0": base64.b64encode(b"not zlib").decode()}, "does not decode"),
    ({f"{MANIFEST_COPY_KEY}1": base64.b64encode(zlib.compress(b"{}")).decode()}, "parts [1]"),
    ({f"{MANIFEST_COPY_KEY}x": "AAAA"}, "is not a part"),
    ({f"{MANIFEST_COPY_KEY}0": base64.b64encode(zlib.compress(b"{}" * 100)[:-6]).decode()}, "truncated"),
    ({f"{MANIFEST_COPY_KEY}0": base64.b64encode(zlib.compress(b"{}") + b"tail").decode()}, "truncated"),
    ({f"{MANIFEST_COPY_KEY}0": base64.b64encode(zlib.compress(b" " * (8 * 1024 * 1024), 9)).decode()},
     "larger than"),
])
def test_a_corrupted_copy_is_unusable_with_a_reason(metadata: dict[str, str], reason: str) -> None:
    with pytest.raises(ManifestCopyUnusable, match=reason.replace("[", r"\[").replace("]", r"\]")):
        manifest_from_copy(metadata)


def test_a_copy_missing_a_part_is_unusable() -> None:
    data = manifest_bytes(warnings=[base64.b64encode(os.urandom(900)).decode() for _ in range(3)])
    metadata = manifest_copy_metadata(data)
    metadata.pop(f"{MANIFEST_COPY_KEY}1")
    with pytest.raises(ManifestCopyUnusable, match="not 0.."):
        manifest_from_copy(metadata)


def whole_schema_errors(raw: object) -> list[str]:
    from continuity.adapters.postgres.catalog_store import MANIFEST_SCHEMA_PATH, _validator

    return [e.message for e in _validator(MANIFEST_SCHEMA_PATH).iter_errors(raw)]


@pytest.mark.parametrize("mutate", [
    lambda m: m,
    lambda m: m.pop("ledger"),
    lambda m: m.update(extra=1),
    lambda m: m["source"].update(region="West Europe"),
    lambda m: m["files"][0].update(sha256="0" * 63),
    lambda m: m.update(created_at="yesterday"),
    lambda m: m["ledger"].update(posted_moves=-1),
    lambda m: m.update(row_counts={"account_move": "10"}),
    lambda m: m.update(warnings=[1]),
    lambda m: m["attachments"].pop("count"),
], ids=["valid", "missing-required", "extra-property", "nested-pattern", "nested-in-array", "format", "minimum",
        "type-in-map", "type-in-list", "nested-required"])
def test_schema_check_judged_property_by_property_agrees_with_the_whole_schema(mutate: object) -> None:
    from continuity.adapters.postgres.catalog_store import manifest_schema_check

    raw = make_manifest()
    mutate(raw)  # type: ignore[operator]
    expected_valid = not whole_schema_errors(raw)
    for _ in range(2):  # the second time from the per-value cache
        problem = manifest_schema_check(raw)
        assert (problem is None) == expected_valid, problem


def test_schema_check_of_a_non_object_or_non_json_value_is_judged_whole() -> None:
    from continuity.adapters.postgres.catalog_store import manifest_schema_check

    assert manifest_schema_check([make_manifest()]) is not None
    odd = make_manifest()
    odd["row_counts"] = {"account_move": float("nan")}
    assert (manifest_schema_check(odd) is None) == (not whole_schema_errors(odd))
