"""Storage resource and the IO manager that keeps asset values under the storage root."""

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pandas as pd
from dagster_gcp import GCSResource

from image_search_assets.core.failures import classify
from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.storage import Storage, open_storage, split_gs_uri

# AssetIn metadata flag marking an input as the asset's own previous partition.
PREVIOUS_PARTITION = "image_search/previous_partition"
# On an asset whose step stores its own value (it must be stored before the step's last act).
STORED_BY_STEP = "image_search/stored_by_step"


@functools.cache
def _gcs_client(project: str | None):
    return GCSResource(project=project).get_client()


@functools.cache
def _open(root: str, project: str | None) -> Storage:
    return open_storage(root, lambda: _gcs_client(project))


class StorageResource(dg.ConfigurableResource):
    """Where every artefact lives: a local directory or gs://bucket/prefix (via GCSResource)."""

    root: str
    gcp_project: str | None = None

    def open(self) -> Storage:
        return _open(self.root, self.gcp_project)

    def read_gs(self, uri: str) -> bytes:
        """Bytes of any gs:// object (catalogs, images, checkpoints outside the root)."""
        bucket, name = split_gs_uri(uri)
        return _gcs_client(self.gcp_project).bucket(bucket).blob(name).download_as_bytes()


@contextmanager
def _permanent_fails_once() -> Iterator[None]:
    """A permanent error (a corrupt file, a full disk) fails the step without retry: the
    assets' crash retry policy would otherwise retry every error of an IO manager."""
    try:
        yield
    except Exception as exc:
        verdict = classify(exc)
        if verdict.retryable:
            raise
        raise dg.Failure(description=verdict.message, allow_retries=False) from exc


class StorageIOManager(dg.ConfigurableIOManager):
    """Asset values as Parquet at fixed, partition-keyed keys: a re-run overwrites, never adds."""

    storage: dg.ResourceDependency[StorageResource]

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        key = asset_value_key(context.asset_key.path, context.partition_key)
        if context.definition_metadata.get(STORED_BY_STEP):
            # Stored by the step before it moved CURRENT; writing again here could fail the
            # step after its final act (a full disk), and would write the same bytes twice.
            if not self.storage.open().exists(key):
                raise RuntimeError(f"{key}: the step did not store its value")
        else:
            with _permanent_fails_once():
                self.storage.open().write_parquet(key, obj)
        context.add_output_metadata({"path": dg.MetadataValue.path(self.storage.open().uri(key))})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | None:
        upstream = context.asset_key
        if context.has_asset_partitions and not context.asset_partition_keys:
            return None  # the first partition's "previous day" lies before the start date
        partition = context.asset_partition_key
        key = asset_value_key(upstream.path, partition)
        storage = self.storage.open()
        if not storage.exists(key):
            is_previous_day = bool(context.definition_metadata.get(PREVIOUS_PARTITION))
            raise dg.Failure(
                description=(
                    f"{upstream.to_user_string()} for {partition} is missing"
                    + (" (the previous day this partition builds on)" if is_previous_day else "")
                    + f": materialise {upstream.to_user_string()} for {partition} first, e.g. by "
                    "backfilling that date. This day never runs on missing data."
                ),
                metadata={"missing_partition": partition, "expected_at": storage.uri(key)},
                allow_retries=False,
            )
        with _permanent_fails_once():
            return storage.read_parquet(key)
