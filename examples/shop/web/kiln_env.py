"""What kiln tells the app: its relationships (KILN_RELATIONSHIPS) and a redis client from them."""

import base64
import json
import os
import time

import redis


def relationships():
    """KILN_RELATIONSHIPS decoded: name -> [{service, host, ip, port, scheme}]."""
    raw = os.environ.get("KILN_RELATIONSHIPS", "")
    if not raw:
        return {}
    return json.loads(base64.b64decode(raw))


def cache_endpoint():
    """The first endpoint of the `cache` relationship, or None when it is not declared."""
    endpoints = relationships().get("cache") or []
    return endpoints[0] if endpoints else None


def cache_client():
    """A redis client for the `cache` relationship; raises LookupError when there is none."""
    endpoint = cache_endpoint()
    if endpoint is None:
        raise LookupError("no `cache` relationship in KILN_RELATIONSHIPS")
    host = endpoint.get("ip") or endpoint["host"]
    return redis.Redis(host=host, port=int(endpoint["port"]), socket_timeout=2,
                       socket_connect_timeout=2, decode_responses=True)


def ready_cache_client(seconds=10.0):
    """A redis client once redis answers PING, trying for up to `seconds` (for hooks and tasks)."""
    deadline = time.monotonic() + seconds
    client = cache_client()
    while True:
        try:
            client.ping()
            return client
        except redis.RedisError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


MIGRATION_KEY = "shop:migration"
VISITS_KEY = "shop:visits"
WARM_KEY = "shop:warm"
