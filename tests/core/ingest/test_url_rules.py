"""Which catalog URLs are fetched at all: refused rows never reach a read, a DNS lookup or a
connect, and the verdict is the same whether or not the target exists."""

from __future__ import annotations

import pytest

from image_search_assets.core.ingest.fetch import FetchPolicy, fetch_bytes
from image_search_assets.core.ingest.images import ItemRejected
from image_search_assets.core.ingest.url_rules import LOCAL_KINDS, UrlRules
from image_search_assets.settings import ConfigError, FetchConfig, load_settings, parse_settings

pytestmark = pytest.mark.usefixtures("connects")

SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
DEPLOYED = FetchPolicy(
    allow_private_hosts=("127.0.0.1",), rules=UrlRules(gcs_prefixes=("imgs/catalog/",))
)


def _refusal(uri: str, policy: FetchPolicy = DEPLOYED, **kwargs) -> ItemRejected:
    with pytest.raises(ItemRejected) as info:
        fetch_bytes(uri, policy, **kwargs)
    return info.value


def test_a_deployment_refuses_local_files_before_reading_with_no_existence_oracle(
    tmp_path, monkeypatch, connects
) -> None:
    real = tmp_path / "real.jpg"
    real.write_bytes(b"\xff\xd8\xff")
    opened: list[object] = []  # the one function that stats and opens local files
    monkeypatch.setattr(
        "image_search_assets.core.ingest.fetch.read_file", lambda *a: opened.append(a) or b""
    )
    pairs = [
        (real.as_uri(), (tmp_path / "missing.jpg").as_uri()),
        (str(real), str(tmp_path / "missing.jpg")),
        ("file:///etc/passwd", "file:///etc/no-such-file"),
        ("/proc/self/environ", "/proc/self/no-such-file"),
        (SA_TOKEN, SA_TOKEN + "-missing"),
        ("real.jpg", "missing.jpg"),  # relative to base_dir
    ]
    for exists, missing in pairs:
        a = _refusal(exists, base_dir=tmp_path)
        b = _refusal(missing, base_dir=tmp_path)
        assert (a.reason, a.detail) == (b.reason, b.detail) and a.reason == "scheme_not_allowed"
    assert opened == [] and connects == []
    fetch_bytes(str(real), FetchPolicy(rules=UrlRules(LOCAL_KINDS)))
    assert len(opened) == 1  # the same row in local mode does reach the read


def test_a_deployment_refuses_plain_http_and_other_schemes_before_any_lookup(connects) -> None:
    for uri in ("http://127.0.0.1:9/a.jpg", "http://images.example.com/a.jpg", "ftp://x/a.jpg"):
        assert _refusal(uri).reason == "scheme_not_allowed", uri
    assert connects == []


def test_gs_rows_must_lie_under_an_allow_listed_prefix() -> None:
    reads: list[str] = []

    def gcs_read(uri: str) -> bytes:
        reads.append(uri)
        return b"img"

    assert fetch_bytes("gs://imgs/catalog/a.jpg", DEPLOYED, gcs_read=gcs_read) == b"img"
    assert fetch_bytes("GS://imgs/catalog/b.jpg", DEPLOYED, gcs_read=gcs_read) == b"img"
    refused = [
        "gs://another-bucket/x.jpg",
        "gs://imgs/indexes/tops/CURRENT",  # same bucket, outside the folder
        "gs://imgs/catalog-private/x.jpg",  # "catalog/" is a folder, not a string prefix
        "gs://imgs-catalog/x.jpg",
    ]
    for uri in refused:
        assert _refusal(uri, gcs_read=gcs_read).reason == "scheme_not_allowed", uri
    assert reads == ["gs://imgs/catalog/a.jpg", "GS://imgs/catalog/b.jpg"]
    whole = FetchPolicy(rules=UrlRules(gcs_prefixes=("imgs",)))
    assert fetch_bytes("gs://imgs/any/where.jpg", whole, gcs_read=gcs_read) == b"img"


def test_rules_reject_unknown_kinds_and_malformed_prefixes() -> None:
    with pytest.raises(ValueError, match="unknown URL schemes"):
        UrlRules(("https", "ftp"))
    with pytest.raises(ValueError, match="bucket"):
        UrlRules(gcs_prefixes=("gs://imgs/",))


def test_local_mode_follows_storage_unless_set(monkeypatch) -> None:
    monkeypatch.delenv("IMAGE_SEARCH_IMAGE_PREFIXES", raising=False)
    local = load_settings().fetch
    assert local.local_mode and local.allowed_schemes == ("http", "https", "gs", "file")
    monkeypatch.setenv("IMAGE_SEARCH_STORAGE_ROOT", "gs://platform/prod")
    monkeypatch.setenv("IMAGE_SEARCH_IMAGE_PREFIXES", "imgs/catalog/, other")
    deployed = load_settings().fetch
    assert not deployed.local_mode and deployed.allowed_schemes == ("https", "gs")
    assert deployed.gcs_prefixes == ("imgs/catalog/", "other")
    raw = {"categories": [{"name": "tops"}], "storage_root": "gs://b/p"}
    with pytest.raises(ConfigError, match="local mode only"):
        parse_settings({**raw, "fetch": {"schemes": ["https", "file"]}})
    forced = parse_settings({**raw, "fetch": {"local_mode": True}}).fetch
    assert "file" in forced.allowed_schemes
    with pytest.raises(ConfigError, match="local_mode"):
        parse_settings({**raw, "fetch": {"local_mode": "yes"}})
    assert FetchConfig().allowed_schemes == ("https", "gs")  # the dataclass default is strict
