"""Where each target is, and what a request to it carries: its URL, the same URL as logs show it
(the tenant token masked), and its headers (the API token only to targets that need it).

Why apart from the client: these are facts of the configuration (base URLs, tenant, token) applied
to the targets' descriptions; the client only sends. Nothing here speaks HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from destination_planhat.planhat.api import TARGETS, Endpoint, Host, endpoint_path


class Addresses:
    def __init__(
        self, base_url: str, tenant: Optional[str], api_token: Optional[str], main_base_url: Optional[str] = None
    ) -> None:
        """`base_url`: the analytics host's; `main_base_url`: the main API's. `tenant`: None when no
        stream goes to the analytics host (its targets then have no URL)."""
        self._base_urls: Mapping[Host, str] = {Host.ANALYTICS: base_url, Host.MAIN: main_base_url or ""}
        self._urls = {
            endpoint: self._base_urls[t.host]
            + (t.path if "{tenant}" not in t.path else endpoint_path(endpoint, tenant or ""))
            for endpoint, t in TARGETS.items()
            if "{tenant}" not in t.path or tenant
        }
        self._api_token = api_token

    def base_url(self, host: Host) -> str:
        return self._base_urls[host]

    def url(self, endpoint: Endpoint) -> str:
        """The target's URL, tenant token included: for requests only, never for logs."""
        return self._urls[endpoint]

    def url_for_logs(self, endpoint: Endpoint) -> str:
        """The target's URL with the tenant token masked."""
        target = TARGETS[endpoint]
        return self._base_urls[target.host] + target.path.format(tenant="***")

    def where(self, endpoint: Endpoint) -> str:
        """The target as error messages name it: its label and its URL (secrets masked)."""
        return f"Planhat {endpoint.label} ({self.url_for_logs(endpoint)})"

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if TARGETS[endpoint].needs_api_token and self._api_token:
            headers["Authorization"] = f"Bearer {self._api_token}"
        return headers
