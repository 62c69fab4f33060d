"""A local imitation of Cloudflare's dispatch-namespace API, for demos and tests.

It serves the same paths, envelope, error codes, authentication schemes and
rate-limit headers as ``api.cloudflare.com/client/v4``, can inject seeded
faults, and counts what it saw at ``/__sandbox/stats``. It binds 127.0.0.1.
"""

from provisioner.sandbox.config import FaultRates, SandboxConfig
from provisioner.sandbox.faults import FaultKind
from provisioner.sandbox.server import SandboxServer, run_sandbox
from provisioner.sandbox.store import NamespaceRecord, NamespaceStore

__all__ = [
    "FaultKind",
    "FaultRates",
    "NamespaceRecord",
    "NamespaceStore",
    "SandboxConfig",
    "SandboxServer",
    "run_sandbox",
]
