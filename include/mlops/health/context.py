"""What every check receives: the settings and shared HTTP clients for one sweep."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from mlops.settings import Settings


@dataclass
class CheckContext:
    """Per-sweep resources. HTTP clients are shared by TLS settings: building an SSL
    context costs milliseconds of CPU, which 200 checks must not pay one by one."""

    settings: Settings
    _clients: dict[Any, Any] = field(default_factory=dict)

    def http_client(self, verify: bool | str = True):
        """An ``httpx.AsyncClient`` verifying with ``verify`` (True, False or a CA file path)."""
        import httpx

        client = self._clients.get(verify)
        if client is None:
            tls = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
            client = httpx.AsyncClient(
                verify=tls,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
                trust_env=False,
            )
            self._clients[verify] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
