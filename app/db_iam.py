"""RDS IAM database authentication: each new connection signs in with a fresh token.

A token is a SigV4-presigned ``connect`` request for one host, port and user, valid for
15 minutes and checked only when a connection opens (RDS user guide,
UsingWithRDS.IAMDBAuth.Connecting). asyncpg calls a callable password for every new
connection, so a pooled connection lives on past its token and a new one always brings
a valid one: no password exists, so nothing needs rotating.

botocore signs it (``generate_db_auth_token``) with the task role's credentials, which
it fetches from the ECS credentials endpoint and refreshes before they expire.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from app.core.config import IamAuth


class IamTokenPassword:
    """A password callable for asyncpg: returns a new RDS auth token on each call."""

    def __init__(self, auth: IamAuth, client: Any = None) -> None:
        self._auth = auth
        self._client = client
        self._lock = threading.Lock()

    def _rds(self) -> Any:
        with self._lock:  # one client, made on first use (botocore clients are thread-safe)
            if self._client is None:
                import botocore.session

                self._client = botocore.session.get_session().create_client(
                    "rds", region_name=self._auth.region
                )
            return self._client

    def token(self) -> str:
        a = self._auth
        return self._rds().generate_db_auth_token(
            DBHostname=a.host, Port=a.port, DBUsername=a.user, Region=a.region
        )

    async def __call__(self) -> str:
        # Off the event loop: a credentials refresh is an HTTP call to the ECS agent.
        return await asyncio.to_thread(self.token)
