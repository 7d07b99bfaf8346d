"""The body guard's pieces (service/limits.py) on their own; its behaviour end to end is in the
HTTP tests."""

from __future__ import annotations

import requests

from service.limits import form_parts, unknown_field_message


def _parts(req: requests.Request) -> list[tuple[str, bool]]:
    prepared = req.prepare()
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body  # a form: requests keeps text
    return sorted(form_parts(body, prepared.headers["content-type"].encode()))


def test_form_parts_of_json_multipart_and_urlencoded_bodies():
    """The body guard's field finder, on bodies built by a real HTTP client library: every field,
    and which came as files (a part with a filename; text in a file field is told apart)."""
    req = requests.Request(
        "POST",
        "http://x/stylize",
        files=[
            ("content", ("name=x.png", b'--\r\nname="fake"')),
            ("style", ("s.png", b"\x89PNG")),
            ("style", (None, "http://example.com/a.png")),
        ],
        data={"style_name": "wheat_field", "strength": "0.5"},
    )
    assert _parts(req) == [
        ("content", True),
        ("strength", False),
        ("style", False),
        ("style", True),
        ("style_name", False),
    ]
    urlencoded = requests.Request("POST", "http://x/stylize", data={"content": "http://example.com/a.png", "n": "2"})
    assert _parts(urlencoded) == [("content", False), ("n", False)]
    assert form_parts(b'{"n": 1, "sed": 5}', b"application/json") == [("n", False), ("sed", False)]
    assert form_parts(b"[1, 2]", b"application/json") == []
    assert form_parts(b'{"n": 2', b"application/json") == []


def test_unknown_field_message_suggests_the_closest_name():
    message = unknown_field_message("labl", ("n", "seed", "label"))
    assert message == "unknown field 'labl'; did you mean 'label'? accepted fields: n, seed, label"
    assert "did you mean" not in unknown_field_message("zzz", ("n", "seed"))
