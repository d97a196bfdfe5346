"""The JSON shape of a similar-items answer."""

from __future__ import annotations

from pydantic import BaseModel

from image_search_assets.serving.reader import Answer

MAX_K = 100


class NeighbourOut(BaseModel):
    product_id: str
    category: str
    distance: float
    version: str


class SimilarOut(BaseModel):
    neighbours: list[NeighbourOut]
    versions: dict[str, str]
    query_category: str | None = None


def out(answer: Answer) -> SimilarOut:
    return SimilarOut(
        neighbours=[NeighbourOut(**vars(n)) for n in answer.neighbours],
        versions=answer.versions,
        query_category=answer.category,
    )
