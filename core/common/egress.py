"""Where a task file may send a key: the operator's allow-lists, checked before anything is read or sent.

A task file is also the Prefect UI's retrain form, so its `teacher.base_url` + `teacher.api_key_env` (and
`service.url` + `service.admin_key_env`) could otherwise name any host and any environment variable, and the run
would send that variable's value there as a bearer token. Which variables may hold keys (`secret_env_allowed`) and
which hosts may be reached (`hosts_allowed`, exact names or `*.domain`) are operator settings
(`DISTILL_SLM_SECRET_ENV_ALLOWED`, `DISTILL_SLM_HOSTS_ALLOWED`), never the form's.

    check_endpoint("https://api.openai.com/v1", "OPENAI_API_KEY", "teacher", ModelSettings())  # ConfigError naming the setting
"""

from __future__ import annotations

from urllib.parse import urlsplit

from core.errors import ConfigError
from core.settings import ModelSettings


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in (p.lower().rstrip(".") for p in allowed):
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def check_endpoint(url: str | None, key_env: str | None, section: str, settings: ModelSettings, url_field: str | None = None) -> None:
    """Refuse (ConfigError naming `section`'s field, or `url_field`, and the operator setting) a URL whose host the
    operator has not allowed (`settings.hosts_allowed`), or a key variable not on the operator's list."""
    s = settings
    default_url_field, key_field = (
        ("teacher.base_url", "teacher.api_key_env") if section == "teacher" else (f"{section}.url", f"{section}.admin_key_env")
    )
    url_field = url_field or default_url_field
    if key_env and key_env not in s.secret_env_allowed:
        raise ConfigError(
            f"{key_field}: {key_env!r} is not a variable the operator allows to hold keys "
            f"({s.secret_env_allowed}; the operator's DISTILL_SLM_SECRET_ENV_ALLOWED)"
        )
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{url_field}: {url!r} is not an http(s) URL")
        if "@" in parts.netloc or "\\" in url:
            # Parsers disagree on where the host of such a URL starts (RFC 3986 vs WHATWG read 'a\\@b' differently):
            # the host checked here must be the host every HTTP client connects to.
            raise ConfigError(f"{url_field}: {url!r} carries credentials or a backslash; give the plain host (keys go in api_key_env)")
        if not host_allowed(parts.hostname, s.hosts_allowed):
            raise ConfigError(
                f"{url_field}: host {parts.hostname!r} is not one the operator allows "
                f"({s.hosts_allowed}; the operator's DISTILL_SLM_HOSTS_ALLOWED)"
            )
