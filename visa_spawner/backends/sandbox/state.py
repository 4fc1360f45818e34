"""What the sandbox backend saves to find an instance again after a hub restart."""
from __future__ import annotations

from dataclasses import dataclass

from visa_spawner.backends.base import SavedState, StateError
from visa_spawner.backends.sandbox.command import account_name


@dataclass(frozen=True)
class SandboxState(SavedState):
    """The instance's Unix account and the sandbox's first process (pid + cgroup prove it is ours);
    `instrument_address`: its 127.77.x.y identity at the instrument gateway ("" without one)."""

    backend: str = "sandbox"
    owner: str = ""
    server_name: str = ""
    account: str = ""
    uid: int = -1
    pid: int = 0
    port: int = 0
    started: float = 0.0
    instrument_address: str = ""

    def account_or_derived(self, prefix: str) -> str:
        """The saved account, or the deterministic one of (owner, server) when only those are known."""
        if self.account:
            return self.account
        if not self.owner:
            raise StateError("SandboxState: neither an account nor an owner to find the sandbox by")
        return account_name(self.owner, self.server_name, prefix)
