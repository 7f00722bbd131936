from __future__ import annotations

import os

import pytest

from ris_ray.core.uris import is_remote, local_path


@pytest.mark.parametrize(
    ("path", "remote"),
    [
        ("s3://bucket/a.tif", True),
        ("gs://bucket/a.tif", True),
        ("/vsis3/bucket/a.tif", True),
        ("/vsicurl/https://example.org/a.tif", True),
        ("/data/a.tif", False),
        ("rel/a.tif", False),
        ("/vsx/a.tif", False),
    ],
)
def test_is_remote(path: str, remote: bool) -> None:
    assert is_remote(path) is remote


def test_local_path_absolute_and_remote_unchanged() -> None:
    assert local_path("rel/x.lance") == os.path.join(os.getcwd(), "rel/x.lance")
    assert local_path("s3://b/x.lance") == "s3://b/x.lance"
