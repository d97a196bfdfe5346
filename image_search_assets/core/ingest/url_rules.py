"""Which catalog URLs a deployment fetches at all, judged from the URL alone (Dagster-free).

A refused URL is `scheme_not_allowed` before anything is read or dialled, and the detail names
only the scheme or bucket: the verdict is the same whether or not the target exists, so a
catalog cannot probe for files (`file:///proc/self/environ`, the service-account token) or
objects in other buckets.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult

from image_search_assets.core.ingest.images import ItemRejected

# "file" stands for file:// URLs and bare paths alike: both read the pod's own filesystem.
URL_KINDS = ("http", "https", "gs", "file")
LOCAL_KINDS = URL_KINDS  # local mode: the demo, tests and a workstation
DEPLOYED_KINDS = ("https", "gs")  # anything else (GKE): TLS and allow-listed buckets only


@dataclass(frozen=True)
class UrlRules:
    """The allowed URL kinds, and the gs:// bucket/prefixes a row may name."""

    schemes: tuple[str, ...] = DEPLOYED_KINDS
    gcs_prefixes: tuple[str, ...] = ()  # "bucket" (all of it) or "bucket/folder/"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.schemes) - set(URL_KINDS))
        if unknown:
            raise ValueError(f"unknown URL schemes {unknown}: choose from {list(URL_KINDS)}")
        for entry in self.gcs_prefixes:
            if not entry or entry.startswith(("gs://", "/")):
                raise ValueError(f"gcs prefix {entry!r} must look like 'bucket' or 'bucket/dir/'")

    def check(self, uri: str, parts: SplitResult) -> str:
        """The URL's kind if it may be fetched; else raises ItemRejected(scheme_not_allowed)."""
        kind = url_kind(uri, parts)
        if kind not in self.schemes:
            what = "file:// URLs and local paths are" if kind == "file" else f"{kind}:// is"
            raise ItemRejected("scheme_not_allowed", f"{what} not allowed in this deployment")
        return kind

    def check_gcs(self, bucket: str, name: str) -> None:
        """Refuses a gs:// object outside every allow-listed bucket/prefix."""
        for entry in self.gcs_prefixes:
            allowed_bucket, _, prefix = entry.partition("/")
            if prefix and not prefix.endswith("/"):
                prefix += "/"  # a folder: "b/img" must not admit "b/img-private/x"
            if bucket == allowed_bucket and name.startswith(prefix):
                return
        raise ItemRejected(
            "scheme_not_allowed", f"gs://{bucket} is outside the allow-listed buckets/prefixes"
        )


def url_kind(uri: str, parts: SplitResult) -> str:
    """http, https, gs, file (file:// or a bare path) or the unknown scheme itself."""
    scheme = parts.scheme.lower()
    if scheme == "file" or "://" not in uri:
        return "file"  # "C:/x" or "data:..." without "//" are read as paths, hence "file"
    return scheme
