"""The body guard's pieces (service/limits.py) on their own; its behaviour end to end is in the
HTTP tests."""

from __future__ import annotations

import requests

from service.limits import field_names, unknown_field_message


def test_field_names_of_json_and_multipart_bodies():
    """The body guard's field finder, on bodies built by a real HTTP client library."""
    req = requests.Request("POST", "http://x/stylize", files=[("content", ("name=x.png", b"--\r\nname=\"fake\"")),
                                                             ("style", ("s.png", b"\x89PNG"))],
                           data={"style_name": "brick", "strength": "0.5"}).prepare()
    assert sorted(field_names(req.body, req.headers["content-type"].encode())) == [
        "content", "strength", "style", "style_name"]
    assert field_names(b'{"n": 1, "sed": 5}', b"application/json") == ["n", "sed"]
    assert field_names(b"[1, 2]", b"application/json") == []
    assert field_names(b'{"n": 2', b"application/json") == []


def test_unknown_field_message_suggests_the_closest_name():
    message = unknown_field_message("labl", ("n", "seed", "label"))
    assert message == "unknown field 'labl'; did you mean 'label'? accepted fields: n, seed, label"
    assert "did you mean" not in unknown_field_message("zzz", ("n", "seed"))
