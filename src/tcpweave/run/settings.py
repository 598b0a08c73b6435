"""What a run computes with: frozen, carried whole to every task (and pickled to Dask)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tcpweave.enums import ChecksumMode, Policy, parse_option

__all__ = ["ROWS_PER_PARTITION", "Settings"]

#: rows a partition should hold (it bounds a task's memory): a few hundred bytes per row
#: while it is planned and written
ROWS_PER_PARTITION = 100_000


@dataclass(frozen=True)
class Settings:
    """The options that shape what a run finds: the overlap policy, the checksum mode and
    the idle timeout that splits sessions (0: only the SYN rules split them), and what the
    run decided about checksum offload."""

    policy: Policy = Policy.FIRST
    checksums: ChecksumMode = ChecksumMode.AUTO
    idle_timeout_ns: int = 0
    #: a BPF expression (pcap-filter(7)): records it rejects are not packets of the capture
    bpf: str = ""
    #: the sending hosts (16-byte addresses) whose bad TCP checksums ``auto`` keeps: decided
    #: by the run over the whole capture (``reassembly.offload``); None: by each partition
    offloaded: tuple[bytes, ...] | None = None

    @classmethod
    def of(
        cls,
        policy: str | Policy = Policy.FIRST,
        checksums: str | ChecksumMode = ChecksumMode.AUTO,
        idle_timeout: float = 0.0,
        bpf: str = "",
    ) -> Settings:
        """Settings from option values (strings as on the command line, or enum members);
        an unknown value is a UsageError naming the choices."""
        return cls(
            parse_option(Policy, policy, "--policy"),
            parse_option(ChecksumMode, checksums, "--checksums"),
            int(idle_timeout * 1e9),
            bpf.strip(),
        )

    def options(self) -> tuple[tuple[str, Any], ...]:
        """The settings as (name, value) pairs with printable values, sorted by name."""
        return (
            ("checksums", str(self.checksums)),
            ("filter", self.bpf),
            ("idle_timeout_ns", self.idle_timeout_ns),
            ("policy", str(self.policy)),
        )
