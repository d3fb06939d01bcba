"""Files from the Hugging Face hub, through huggingface_hub: the local cache first, then
the network; offline, one line that says how to pass local files instead."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from mlx_gpt.errors import UserError, first_line

PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def local_or_fetch(source: str, patterns: list[str], hint: str) -> Path:
    """`source` as a local path if it exists; else, if it reads as a hub name (org/name
    or name, not ./x or /x), the hub folder of its files that match `patterns`."""
    path = Path(source)
    if path.exists():
        return path
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise UserError(f"{source} does not exist; {hint}")
    return fetch(source, patterns, hint)


def fetch(repo_id: str, patterns: list[str], hint: str) -> Path:
    """A local folder holding the files of hub repo `repo_id` that match `patterns`.

    `hint` says how to do without the hub (e.g. "pass a local folder ..."): it ends the
    error when the files are neither cached nor reachable."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass  # not in the cache
    if offline():
        raise UserError(
            f"{repo_id!r} is not in the Hugging Face cache and the hub cannot be reached "
            f"(offline); {hint}"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # not found, gated, network: huggingface_hub has many kinds
        raise UserError(
            f"could not fetch {repo_id!r} from the Hugging Face hub ({first_line(e)}); {hint}"
        ) from None


def offline() -> bool:
    """HF_HUB_OFFLINE is set, or the hub's host name does not resolve and no proxy is
    configured: known at once, instead of after huggingface_hub's retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    if any(os.environ.get(v) for v in PROXY_VARS):
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return True
    return False
