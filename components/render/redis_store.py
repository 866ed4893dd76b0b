"""The Redis that keeps the head's GCS state, as text (no Pulumi).

With it, a restarted head (container crash, VM reboot) resumes the same
cluster: workers keep their node ids, detached actors their state, running
tasks finish once. Its config is fed on stdin (`redis-server -`), so the
password is neither in a file on disk nor on any command line: the container's
shell reads it from the secret environment (`PASSWORD_ENV`, which `redis-cli`
in the health check reads too).

Persistence is an append-only file fsynced every second: a restart of Redis
(or of its VM) loses at most a second of GCS writes.
"""
from __future__ import annotations

CONTAINER_NAME = "ray-gcs-redis"
DATA_DIR = "/data"  # the redis image's working dir; on the data disk (render/data_disk.py REDIS)
# Pulumi waits this long for a new Redis container to be healthy (loading a large AOF takes a while).
HEALTHY_WITHIN_SECONDS = 120
# redis-cli reads the password from this variable; the config on stdin is built from it too.
PASSWORD_ENV = "REDISCLI_AUTH"


def redis_conf(bind: list[str], port: int, data_dir: str = DATA_DIR) -> str:
    """Everything but the password: listen on `bind` only, keep an AOF under `data_dir`."""
    return "\n".join(
        [
            f"bind {' '.join(bind)}",
            f"port {port}",
            f"dir {data_dir}",
            "appendonly yes",
            "appendfsync everysec",
            # The GCS's tables must never be evicted.
            "maxmemory-policy noeviction",
            "",
        ]
    )


def entrypoint_script(conf: str) -> str:
    """`sh -c` script: redis-server in the foreground, its config (and the password) on stdin."""
    return f'exec redis-server - <<END_OF_REDIS_CONF\n{conf}requirepass "${PASSWORD_ENV}"\nEND_OF_REDIS_CONF\n'


def health_check_command(port: int) -> list[str]:
    """PONG only with the password: an answering Redis that refuses us is not healthy."""
    return ["CMD", "sh", "-c", f"redis-cli -h 127.0.0.1 -p {port} ping | grep -qx PONG"]
