"""Data-parallel ranks with MLX's own engine (mx.distributed), started by mlx.launch.

    mlx.launch -n 2 -- python train.py --preset small       # 2 processes, this machine
    mlx.launch --hostfile hosts.json -- python train.py     # several Macs

Every rank runs the same program. Without mlx.launch (no MLX_RANK / MPI environment)
there is one rank and nothing here communicates. Rank 0 alone touches the run folder;
what the others need from it (a resumed run's settings, tokenizer, weights, optimizer
and step) it sends them, so no rank reads another's disk.

A collective that fails because a peer is gone raises PeerLost (exit 5); one that
waits longer than the peer timeout (a peer that hangs, a host that vanished without
closing its sockets) ends the process with the same exit code (see Watchdog).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from mlx_gpt.distributed.peers import Watchdog, quiet_ring_messages
from mlx_gpt.errors import PeerLost, UserError, first_line
from mlx_gpt.machine.dtypes import dtype_named
from mlx_gpt.runs import checkpoint

# Environment variables that mean "started by mlx.launch (or mpirun)", and the backend
# it set up. mlx.launch's backends set MLX_RANK and one of the first three (NCCL, its
# default where CUDA is, also NCCL_PORT and MLX_WORLD_SIZE); mpirun sets the last two.
BACKENDS = (
    ("MLX_HOSTFILE", "ring"),
    ("MLX_IBV_DEVICES", "jaccl"),
    ("NCCL_HOST_IP", "nccl"),
    ("OMPI_COMM_WORLD_SIZE", "mpi"),
    ("PMI_SIZE", "mpi"),
)


@dataclass
class Ranks:
    """This process's place among the ranks; one rank without a launcher."""

    group: Any = None  # mx.distributed.Group, or None for one process
    rank: int = 0
    size: int = 1
    backend: str = ""
    timeout: float = 120.0  # seconds a collective may wait for the others
    hint: Any = None  # () -> str: what is saved and how to resume, after a lost peer

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"ranks {self.size} (backend {self.backend})"

    # ---- collectives; no-ops for one rank ----

    def all_sum(self, x: mx.array) -> mx.array:
        return mx.distributed.all_sum(x, group=self.group) if self.size > 1 else x

    def run(self, fn, *args):
        """Evaluate fn(*args) (a computation with collectives in it) under the watchdog;
        a lost peer becomes PeerLost."""
        if self.size == 1:
            out = fn(*args)
            mx.eval(out)
            return out
        with Watchdog(self):
            try:
                out = fn(*args)
                mx.eval(out)
            except RuntimeError as e:
                if "[ring]" in str(e) or "peer" in str(e).lower():
                    raise PeerLost(self.lost_message(first_line(e))) from None
                raise
        return out

    def lost_message(self, why: str) -> str:
        peers = sorted({(self.rank - 1) % self.size, (self.rank + 1) % self.size} - {self.rank})
        who = f"rank {peers[0]}" if len(peers) == 1 else f"rank {peers[0]} or {peers[1]}"
        return f"lost {who} ({why})"

    def broadcast(self, tree: Any) -> Any:
        """Rank 0's tree of arrays (weights, optimizer state) on every rank. Rank 0 sends
        the names, shapes and dtypes first: the others' trees need not match it."""
        if self.size == 1:
            return tree
        flat = sorted(tree_flatten(tree), key=lambda kv: kv[0]) if self.main else []
        spec = self.broadcast_json([[k, list(v.shape), str(v.dtype)] for k, v in flat])
        if self.main:
            arrays = [v for _, v in flat]
        else:
            arrays = [mx.zeros(shape, dtype=dtype_named(name)) for _, shape, name in spec]
        out = self.run(lambda: [self.all_sum(v) for v in arrays])
        return tree_unflatten([(k, v) for (k, _, _), v in zip(spec, out, strict=True)])

    def broadcast_json(self, value: Any = None) -> Any:
        """Rank 0's JSON-able value on every rank."""
        return self.broadcast_from(0, value) if self.size > 1 else value

    def gather_json(self, value: Any) -> list[Any]:
        """Every rank's JSON-able value, in rank order, on every rank."""
        if self.size == 1:
            return [value]
        return [self.broadcast_from(r, value) for r in range(self.size)]

    def broadcast_from(self, root: int, value: Any) -> Any:
        """Rank `root`'s JSON-able value on every rank: its length, then its bytes."""
        data = json.dumps(value).encode() if self.rank == root else b""
        n = int(self.run(lambda: self.all_sum(mx.array(len(data)))).item())
        mine = list(data) if self.rank == root else [0] * n
        got = self.run(lambda: self.all_sum(mx.array(mine, dtype=mx.int32)))
        return json.loads(bytes(got.astype(mx.uint8).tolist()).decode())

    def agree(self, error: UserError | None) -> None:
        """Every rank stops if any did: the first rank's error, on every rank."""
        if self.size == 1:
            if error is not None:
                raise error
            return
        mine = None if error is None else [str(error), error.exit_code]
        reports = self.gather_json(mine)
        for r, report in enumerate(reports):
            if report is not None:
                message, code = report
                where = "" if r == self.rank else f"on rank {r} ({host_of(self, r)}): "
                stop = UserError(where + message)
                stop.exit_code = code
                raise stop

    def from_main(self, fn) -> Any:
        """fn() computed on rank 0 (it may read rank 0's disk), sent to every rank; a
        UserError there stops every rank. fn returns a JSON-able value."""
        return self.broadcast_json(self.check(fn, main_only=True))

    def _any(self, flag: bool, now: bool) -> bool:
        """Whether any rank raised `flag`. Several ranks ask each other only when `now`;
        otherwise the answer is no until they do."""
        if self.size == 1:
            return flag
        if not now:
            return False
        return bool(self.run(lambda: self.all_sum(mx.array(int(flag)))).item())

    def check(self, fn, *args, main_only: bool = False) -> Any:
        """fn(*args) on every rank (or on rank 0 alone), and its result (None where it did
        not run). A UserError on any rank stops them all."""
        error, result = None, None
        try:
            if self.main or not main_only:
                result = fn(*args)
        except UserError as e:
            if self.size == 1:
                raise
            error = e
        self.agree(error)
        return result

    def share_state(self, model, optimizer, data_rng, state: dict, keys, seed: int) -> None:
        """Rank 0's weights, optimizer state, step and generators on every rank. Each rank
        then has a random key of its own, so that their dropout masks differ (as in DDP):
        its saved key (`keys`, rank 0's list of every rank's) on a resume, else one made
        from the seed and the rank."""
        if self.size == 1:
            return
        model.update(self.broadcast(model.parameters()))
        optimizer.state = self.broadcast(optimizer.state)
        mine = {**state, "data_rng": data_rng.bit_generator.state, "mlx_keys": keys}
        shared = self.broadcast_json(mine if self.main else None)
        data_rng.bit_generator.state = shared.pop("data_rng")
        keys = shared.pop("mlx_keys")
        state.update(shared)
        if keys and len(keys) == self.size:
            checkpoint.restore_rng_key(keys[self.rank])
        else:
            mx.random.seed(seed * 1000 + self.rank)

    def agree_to_save(self, due: bool, at_record: bool) -> bool:
        """Whether to save latest/ now because a rank's save clock is due. One rank saves
        at once. Several ranks can only agree at records, which every rank reaches at the
        same step, and they then all save at that step."""
        return self._any(due, now=at_record)

    def agree_to_stop(self, requested: bool) -> bool:
        """Whether any rank was asked to stop (a signal). Every rank calls it at the same
        step, and every rank gets the same answer, so they stop together."""
        return self._any(requested, now=True)

    _hosts: list[str] | None = None


def host_of(ranks: Ranks, r: int) -> str:
    if ranks._hosts is None:
        ranks._hosts = ranks.gather_json(socket.gethostname())
    return ranks._hosts[r]


def check_same_data(ranks: Ranks, digest: str | None, error: str | None) -> None:
    """Every rank has the training text, the same: else every rank stops, naming the host."""
    if ranks.size == 1:
        return
    reports = ranks.gather_json([digest, error])
    first = reports[0][0]
    for r, (theirs, problem) in enumerate(reports):
        if problem:
            raise UserError(f"rank {r} on host {host_of(ranks, r)}: {problem}")
        if theirs != first:
            raise UserError(
                f"the training text on rank {r} (host {host_of(ranks, r)}) differs from rank "
                f"0's (sha256 {theirs[:12]} against {first[:12]}); give every host the same file"
            )


def launched(env: Mapping[str, str] = os.environ) -> str:
    """The backend mlx.launch (or mpirun) set this process up for, or "" for none."""
    mpirun = any(var in env for var, backend in BACKENDS if backend == "mpi")
    if "MLX_RANK" not in env and not mpirun:
        return ""
    for var, backend in BACKENDS:
        if var in env:
            return backend
    return ""


def init(timeout: float = 120.0) -> Ranks:
    """Join the other ranks if a launcher started this process; else one rank."""
    backend = launched()
    if not backend:
        return Ranks(timeout=timeout)
    try:
        group = mx.distributed.init(strict=True, backend=backend)
    except (RuntimeError, ValueError) as e:
        raise UserError(
            f"could not join the other ranks over {backend} ({str(e).strip()}); "
            "check the hostfile and that every host runs the same command"
        ) from None
    ranks = Ranks(group, group.rank(), group.size(), backend, timeout)
    if backend == "ring":
        quiet_ring_messages()
    return ranks
