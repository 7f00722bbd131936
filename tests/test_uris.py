"""A location is a value: :class:`ris_ray.core.location.Location`, parsed once."""

from __future__ import annotations

import os
import pickle

import pytest

from ris_ray.core.errors import ObjectStoreError
from ris_ray.core.location import Kind, Location
from ris_ray.core.objstore import S3Settings
from ris_ray.core.uris import is_remote, local_path


@pytest.mark.parametrize(
    ("text", "kind", "scheme", "bucket", "key", "url", "vsi"),
    [
        ("s3://b/k/a.tif", Kind.OBJECT, "s3", "b", "k/a.tif", "s3://b/k/a.tif", "/vsis3/b/k/a.tif"),
        ("/vsis3/b/k/a.tif", Kind.OBJECT, "s3", "b", "k/a.tif", "s3://b/k/a.tif",
         "/vsis3/b/k/a.tif"),
        ("gs://b/a.tif", Kind.OBJECT, "gs", "b", "a.tif", "gs://b/a.tif", "/vsigs/b/a.tif"),
        ("/vsigs/b/a.tif", Kind.OBJECT, "gs", "b", "a.tif", "gs://b/a.tif", "/vsigs/b/a.tif"),
        ("az://c/a.tif", Kind.OBJECT, "az", "c", "a.tif", "az://c/a.tif", "/vsiaz/c/a.tif"),
        ("/vsiaz/c/a.tif", Kind.OBJECT, "az", "c", "a.tif", "az://c/a.tif", "/vsiaz/c/a.tif"),
        ("s3://b", Kind.OBJECT, "s3", "b", "", "s3://b/", "/vsis3/b/"),
        ("s3://b/c//d.tif", Kind.OBJECT, "s3", "b", "c//d.tif", "s3://b/c//d.tif",
         "/vsis3/b/c//d.tif"),
        ("https://h/a.tif", Kind.REMOTE, "https", "", "", "https://h/a.tif", "https://h/a.tif"),
        ("/vsicurl/https://h/a.tif", Kind.REMOTE, "vsicurl", "", "", "/vsicurl/https://h/a.tif",
         "/vsicurl/https://h/a.tif"),
        ("/data/a.tif", Kind.LOCAL, "", "", "", "/data/a.tif", "/data/a.tif"),
        ("/vsx/a.tif", Kind.LOCAL, "", "", "", "/vsx/a.tif", "/vsx/a.tif"),
    ],
)  # fmt: skip
def test_every_form(
    text: str, kind: Kind, scheme: str, bucket: str, key: str, url: str, vsi: str
) -> None:
    loc = Location.parse(text)
    assert (loc.kind, loc.scheme, loc.bucket, loc.key, loc.url, loc.vsi) == (
        kind,
        scheme,
        bucket,
        key,
        url,
        vsi,
    )
    assert str(loc) == text  # messages name what the user typed
    assert Location.parse(loc) is loc  # a value is not parsed again
    assert Location.parse(loc.url) == loc and Location.parse(loc.vsi) == loc  # round trips
    assert loc.is_remote is (kind is not Kind.LOCAL) is is_remote(text)


def test_local_paths_are_absolute_and_os_paths_parse() -> None:
    loc = Location.parse("rel/x.lance")
    assert loc.url == os.path.join(os.getcwd(), "rel/x.lance") == local_path("rel/x.lance")
    assert str(loc) == "rel/x.lance" and loc.is_local and loc.storage_options is None
    from pathlib import Path

    assert Location.parse(Path("rel/x.lance")) == loc
    assert local_path("s3://b/x.lance") == "s3://b/x.lance"


def test_prefix_join_and_bucket_root() -> None:
    root = Location.parse("s3://b")
    assert root.names_prefix and root.prefix is None
    assert Location.parse("s3://b/p").prefix == "p/" and not Location.parse("s3://b/p").names_prefix
    assert Location.parse("s3://b/p/").names_prefix
    lock = Location.parse("/vsis3/b/db.lance/").join("_ris_ingest.lock")
    assert (lock.url, lock.key, lock.bucket) == (
        "s3://b/db.lance/_ris_ingest.lock",
        "db.lance/_ris_ingest.lock",
        "b",
    )
    assert root.join("x").key == "x"
    assert Location.parse("/tmp/db.lance").join("_m.lance").url == "/tmp/db.lance/_m.lance"


def test_an_object_uri_without_bucket_is_one_line() -> None:
    with pytest.raises(ObjectStoreError, match=r"s3://: no bucket named"):
        Location.parse("s3://")


def test_options_come_from_the_settings_and_repr_hides_secrets() -> None:
    secret, token, key_id = "sekrit-0123456789", "tok-ABCDEFGH", "AKIAHIDDEN"
    settings = S3Settings.from_env(
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
            "AWS_REGION": "eu-west-1",
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_SESSION_TOKEN": token,
        }
    )
    loc = Location.parse("s3://b/db.lance", settings)
    assert loc.storage_options == settings.lance_storage_options()
    assert loc.storage_options is loc.storage_options  # built once per value
    assert loc.storage_options["secret_access_key"] == secret
    assert loc.gdal_options == {
        "AWS_REGION": "eu-west-1",
        "AWS_S3_ENDPOINT": "127.0.0.1:9000",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }
    shown = repr(loc) + str(loc) + repr(loc.join("x")) + f"{loc}" + repr(loc.settings)
    for hidden in (secret, token, key_id):
        assert hidden not in shown
    assert Location.parse("gs://b/x").storage_options is None
    # Pickled (to a worker): the fields only, no cached options.
    copy = pickle.loads(pickle.dumps(loc))
    assert copy == loc and "storage_options" not in copy.__dict__
    assert copy.settings == settings
