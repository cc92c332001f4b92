"""The multipart/form-data parser behind the vision endpoints."""

from __future__ import annotations

import httpx
import pytest

from inferbridge.errors import InvalidInput
from inferbridge.frontends.rest.services import parse_multipart


def encoded(files: dict[str, tuple[str, bytes, str]], data: dict[str, str]) -> tuple[str, bytes]:
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.headers["content-type"], request.read()


def test_fields_from_httpx_encoding() -> None:
    payload = b"\r\n--not-the-boundary\r\n\r\n\x00\xff" * 3
    content_type, body = encoded({"image": ("a.png", payload, "image/png")}, {"min_size": "40"})
    assert parse_multipart(content_type, body) == {"image": payload, "min_size": b"40"}


def test_quoted_boundary_and_empty_field() -> None:
    body = (
        b'--b 1\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n\r\n'
        b"\r\n--b 1--\r\n"
    )
    assert parse_multipart('multipart/form-data; boundary="b 1"', body) == {"image": b""}


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("multipart/form-data", b"", "without a boundary"),
        (
            "multipart/form-data; boundary=zz",
            b'--zz\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc',
            "incomplete",
        ),
        ("multipart/form-data; boundary=zz", b"--zz\r\nno blank line--zz--", "blank line"),
    ],
)
def test_malformed_bodies(content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_multipart(content_type, body)
