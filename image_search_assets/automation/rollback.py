"""`rollback_index`: the UI's way to do what `image-search rollback` and `unpin` do.

Launch it from the Launchpad with, for example:
    ops: {change_serving: {config: {category: tops, action: rollback, day: "2026-11-04",
                                    reason: "bad crops since the detector update"}}}
Both paths call operations.change_serving, so a pin set here is cleared by the CLI and back.
"""

from typing import Literal

import dagster as dg

from image_search_assets import operations
from image_search_assets.automation.freshness import serving_metadata
from image_search_assets.core.index import current
from image_search_assets.settings import Settings
from resources import StorageResource

ROLLBACK_JOB = "rollback_index"


class ServingChange(dg.Config):
    """A deliberate move of one category's CURRENT."""

    category: str
    action: Literal["rollback", "unpin"] = "rollback"
    to_version: str = ""  # rollback: this kept version (default: the one CURRENT replaced)
    day: str = ""  # rollback: the newest kept version of this day
    reason: str = "rolled back from the Dagster UI"


def rollback_job(settings: Settings) -> dg.JobDefinition:
    @dg.op(name="change_serving")
    def change_serving(
        context: dg.OpExecutionContext, config: ServingChange, storage: StorageResource
    ) -> None:
        """Points the category's CURRENT at a kept, verified version and pins it, or unpins."""
        try:
            pointer = operations.change_serving(
                storage.open(),
                settings,
                category=config.category,
                action=config.action,
                to_version=config.to_version,
                day=config.day,
                reason=config.reason,
            )
        except operations.REFUSED as e:
            raise dg.Failure(description=str(e), allow_retries=False) from e
        said = current.describe(config.category, pointer)
        context.log.info(said)
        # An observation on the asset: its page shows where serving was moved, and why.
        context.log_event(
            dg.AssetObservation(
                asset_key=dg.AssetKey([config.category, "annoy_index"]),
                description=said,
                metadata=serving_metadata(pointer),
            )
        )

    @dg.job(
        name=ROLLBACK_JOB,
        description="Roll a category back to a kept version and pin it there, or unpin it.",
    )
    def rollback_index() -> None:
        change_serving()

    return rollback_index
