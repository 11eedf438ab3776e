"""Who may act through the dashboard (services/dashboard/access.py): a pure policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.dashboard.access import (
    CROSS_SITE,
    TOKEN_VARIABLE,
    AccessError,
    AccessPolicy,
    is_loopback,
    policy_for,
    same_origin,
)

LOOPBACK = ["127.0.0.1", "::1", "localhost", "LOCALHOST", "[::1]", "127.0.0.2"]
REACHABLE = ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.org", ""]
tokens = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64)
methods = st.sampled_from(["POST", "PUT", "DELETE", "PATCH", "post"])


@pytest.mark.parametrize("host", LOOPBACK)
def test_a_loopback_address_acts_without_a_token(host: str) -> None:
    assert is_loopback(host)
    policy = policy_for(host, None)
    assert not policy.token_required
    assert policy.allows("POST", None) and policy.allows("POST", "Bearer whatever")


@pytest.mark.parametrize("host", LOOPBACK)
def test_a_token_set_for_a_loopback_address_is_not_asked_for(host: str) -> None:
    assert not policy_for(host, "secret").token_required


@pytest.mark.parametrize("host", REACHABLE)
@pytest.mark.parametrize("token", [None, "", "   "])
def test_another_address_refuses_to_start_without_a_token(host: str, token: str | None) -> None:
    assert not is_loopback(host)
    with pytest.raises(AccessError, match=TOKEN_VARIABLE) as refused:
        policy_for(host, token)
    assert f"listen on {host}" in str(refused.value) and "--host 127.0.0.1" in str(refused.value)


@given(token=tokens, method=methods)
def test_actions_need_the_exact_bearer_token(token: str, method: str) -> None:
    policy = policy_for("0.0.0.0", token)
    assert policy.token_required
    assert policy.allows(method, f"Bearer {token}")
    assert policy.allows(method, f"bearer  {token} ")  # the scheme is case-insensitive; blanks around are not the token
    assert not policy.allows(method, None)
    assert not policy.allows(method, "")
    assert not policy.allows(method, token)  # no scheme
    assert not policy.allows(method, f"Basic {token}")
    assert not policy.allows(method, f"Bearer {token}x")
    assert not policy.allows(method, f"Bearer {token[:-1]}")


@given(token=tokens, other=tokens)
def test_another_token_is_refused(token: str, other: str) -> None:
    policy = policy_for("10.1.2.3", token)
    assert policy.allows("POST", f"Bearer {other}") == (other == token)


@given(token=st.one_of(st.none(), tokens), host=st.sampled_from(["127.0.0.1", "0.0.0.0"]),
       method=st.sampled_from(["GET", "HEAD", "OPTIONS", "get"]),
       authorization=st.one_of(st.none(), st.text(max_size=40)))
def test_reading_never_needs_a_token(token: str | None, host: str, method: str, authorization: str | None) -> None:
    policy = AccessPolicy(host, token)
    assert policy.allows(method, authorization)


def test_the_refusal_names_the_address_and_the_variable() -> None:
    assert policy_for("0.0.0.0", "t").refusal() == (
        "this dashboard listens on 0.0.0.0: actions need the token in THEODOLITE_DASHBOARD_TOKEN "
        "(Authorization: Bearer ...)")


@pytest.mark.parametrize(("origin", "host", "same"), [
    (None, "127.0.0.1:8765", True),  # not a browser's cross-site request
    ("http://127.0.0.1:8765", "127.0.0.1:8765", True),
    ("http://LOCALHOST:8765", "localhost:8765", True),
    ("http://127.0.0.1:8766", "127.0.0.1:8765", False),
    ("https://evil.example", "127.0.0.1:8765", False),
    ("null", "127.0.0.1:8765", False),  # a sandboxed page or a file
    ("http://127.0.0.1:8765", None, False),
])
def test_actions_from_another_sites_page_are_not_the_same_origin(origin: str | None, host: str | None, same: bool) -> None:
    assert same_origin(origin, host) is same


@given(origin=st.one_of(st.none(), st.sampled_from(["http://127.0.0.1:8765", "https://evil.example", "null"])),
       authorization=st.one_of(st.none(), st.just(f"Bearer {'t' * 8}"), st.text(max_size=20)))
def test_the_one_decision_combines_method_token_and_origin(origin: str | None, authorization: str | None) -> None:
    host = "127.0.0.1:8765"
    loopback, reachable = policy_for("127.0.0.1", None), policy_for("0.0.0.0", "t" * 8)
    for policy in (loopback, reachable):
        assert policy.refusal_of("GET", authorization, origin, host) is None
    expected = None if same_origin(origin, host) else CROSS_SITE
    assert loopback.refusal_of("POST", authorization, origin, host) == expected
    # with a token the origin is not looked at (a proxy may rewrite Host): the token decides
    token_ok = reachable.allows("POST", authorization)
    assert reachable.refusal_of("POST", authorization, origin, host) == (None if token_ok else reachable.refusal())
