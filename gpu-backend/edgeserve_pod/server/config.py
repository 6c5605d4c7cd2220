"""ServerConfig: everything about the pod server that is not the engine, validated once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlparse

_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # schema $defs/PodId
_ROLES = ("prefill", "decode", "both")
# Largest valid GenerateRequest body: 1,048,576 token ids of up to 10 digits plus commas,
# with room for the other fields.
DEFAULT_MAX_BODY_BYTES = 12 * 1024 * 1024 + 64 * 1024


def _check_url(name: str, url: str | None) -> None:
    if url is None:
        return
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise ValueError(f"{name} must be an http(s) URL, got {url!r}")


@dataclass
class ServerConfig:
    pod_id: str = "pod-0"
    host: str = "127.0.0.1"
    port: int = 9001
    role: str = "both"
    advertise_url: str | None = None  # URL the edge calls this pod on; default http://host:port
    edge_url: str | None = None  # None: no registration, heartbeats or KV-event pushes
    pod_secret: str | None = None  # Bearer token for the edge's /internal endpoints and pod-to-pod KV PUTs
    heartbeat_s: float = 5.0  # used until the edge answers registration with heartbeat_ms
    kv_cut_interval_s: float = 0.1  # how often pending KV events become a batch (and get pushed)
    kv_log_keep: int = 4096  # batches kept for GET /v1/kv_events
    max_waiting: int | None = 1024  # queue depth beyond which generate answers 503 overloaded
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    edge_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.pod_id, str) or not _ID.match(self.pod_id):
            raise ValueError(f"pod_id must match [A-Za-z0-9._:-]{{1,128}}, got {self.pod_id!r}")
        if self.role not in _ROLES:
            raise ValueError(f"role must be one of {_ROLES}, got {self.role!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port!r}")
        _check_url("edge_url", self.edge_url)
        _check_url("advertise_url", self.advertise_url)
        if self.edge_url is not None and not self.pod_secret:
            raise ValueError("edge_url needs pod_secret (--pod-secret or $EDGESERVE_POD_SECRET)")
        for name in ("heartbeat_s", "kv_cut_interval_s", "edge_timeout_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be > 0, got {v!r}")
        if self.kv_cut_interval_s < 0.002:  # KV batch seq must grow slower than a ms clock (kv_log.py)
            raise ValueError(f"kv_cut_interval_s must be >= 0.002, got {self.kv_cut_interval_s!r}")
        if self.max_waiting is not None and self.max_waiting < 1:
            raise ValueError(f"max_waiting must be >= 1 or None, got {self.max_waiting!r}")
        if self.kv_log_keep < 1:
            raise ValueError(f"kv_log_keep must be >= 1, got {self.kv_log_keep!r}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes!r}")

    @property
    def url(self) -> str:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
