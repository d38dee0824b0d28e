"""The web gateway's rules that need no runtime: binds, who is admitted, tokens on disk."""

import pytest
from remotecell_runtime import web_tokens
from remotecell_runtime.services.web import WebBindError, open_to_all, parse_bind


def test_web_bind_is_host_and_port_and_a_bad_one_is_named():
    assert parse_bind(None) == ("127.0.0.1", 8190, True)  # the default port moves when taken
    assert parse_bind("127.0.0.1:0") == ("127.0.0.1", 0, False)
    assert parse_bind("[::1]:9000") == ("::1", 9000, False)
    for bad in ["8190", "host:", ":80", "h:99999", "h:x"]:
        with pytest.raises(WebBindError, match="HOST:PORT"):
            parse_bind(bad)


def test_beyond_loopback_every_endpoint_needs_a_token_unless_public():
    assert open_to_all("127.0.0.1", public=False) and open_to_all("::1", public=False)
    assert not open_to_all("0.0.0.0", public=False) and not open_to_all("10.1.2.3", public=False)
    assert open_to_all("0.0.0.0", public=True)


def test_tokens_are_checked_against_the_file_as_it_is_now(tmp_path):
    check = web_tokens.TokenCheck(tmp_path)
    assert not check.admits("wk-x", "ws-y")
    made = web_tokens.new(tmp_path, "ci")
    assert check.admits(made["key"], made["secret"])
    assert not check.admits(made["key"], "ws-wrong") and not check.admits(None, made["secret"])
    assert (tmp_path / "web_tokens.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(web_tokens.WebTokenError, match="exists"):
        web_tokens.new(tmp_path, "ci")
    with pytest.raises(web_tokens.WebTokenError, match="token name"):
        web_tokens.new(tmp_path, "a b")
    web_tokens.revoke(tmp_path, "ci")
    assert not check.admits(made["key"], made["secret"])
    with pytest.raises(web_tokens.WebTokenError, match="no web token"):
        web_tokens.revoke(tmp_path, "ci")
