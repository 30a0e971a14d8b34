"""Where a task file may send a key: the host and variable allow-lists, tried with what an attacker would write."""

from __future__ import annotations

import pytest

from core.common.egress import check_endpoint, host_allowed
from core.errors import ConfigError
from core.settings import ModelSettings


@pytest.fixture
def allow_openai() -> ModelSettings:
    """An operator's settings that allow the OpenAI API and an internal domain (handed in, as an entry point does)."""
    return ModelSettings(hosts_allowed=["api.openai.com", "*.internal.example", "127.0.0.1"], secret_env_allowed=["OPENAI_API_KEY"])


@pytest.mark.parametrize(
    "host, allowed",
    [
        ("api.openai.com", True),
        ("API.OpenAI.com.", True),  # case and the root's trailing dot change nothing
        ("api.openai.com.evil.net", False),  # an allowed name as a prefix
        ("evilapi.openai.com", False),  # an exact entry allows no subdomain and no look-alike
        ("gpu.internal.example", True),
        ("a.b.internal.example", True),
        ("internal.example", False),  # '*.domain' is its subdomains, not the domain
        ("evilinternal.example", False),  # a suffix without the dot
        ("127.0.0.1", True),
        ("127.0.0.2", False),
    ],
)
def test_host_allowed_matches_exact_names_and_dot_bounded_subdomains_only(host, allowed):
    assert host_allowed(host, ["api.openai.com", "*.internal.example", "127.0.0.1"]) is allowed


@pytest.mark.parametrize(
    "url, problem",
    [
        ("https://api.openai.com@evil.net/v1", "carries credentials"),  # userinfo: the host is what follows the '@'
        ("https://evil.net#@api.openai.com/v1", "host 'evil.net'"),
        # Python and httpx read api.openai.com here, a WHATWG parser evil.net: refused whatever a client would do
        ("https://evil.net\\@api.openai.com/v1", "carries credentials or a backslash"),
        ("https://user:pw@api.openai.com/v1", "carries credentials"),
        ("file:///etc/passwd", "not an http\\(s\\) URL"),
        ("ftp://api.openai.com/", "not an http\\(s\\) URL"),
        ("https:///v1", "not an http\\(s\\) URL"),
        ("http://[::1]:8000/v1", "host '::1'"),  # loopback, but not on this operator's list
    ],
)
def test_urls_that_smuggle_another_host_are_refused_naming_the_field(allow_openai, url, problem):
    with pytest.raises(ConfigError, match=rf"teacher.base_url: .*{problem}"):
        check_endpoint(url, "OPENAI_API_KEY", "teacher", allow_openai)


def test_a_key_variable_off_the_list_is_refused_before_the_host_is_looked_at(allow_openai):
    with pytest.raises(ConfigError, match=r"teacher.api_key_env: 'AWS_SECRET_ACCESS_KEY' is not a variable"):
        check_endpoint("https://api.openai.com/v1", "AWS_SECRET_ACCESS_KEY", "teacher", allow_openai)
    with pytest.raises(ConfigError, match=r"service.admin_key_env: 'HOME' .*DISTILL_SLM_SECRET_ENV_ALLOWED"):
        check_endpoint("http://127.0.0.1:8000", "HOME", "service", allow_openai)


def test_allowed_endpoints_pass(allow_openai):
    check_endpoint("https://api.openai.com/v1", "OPENAI_API_KEY", "teacher", allow_openai)
    check_endpoint("http://gpu.internal.example:8000/v1", None, "teacher", allow_openai)
    check_endpoint(None, None, "service", allow_openai)
