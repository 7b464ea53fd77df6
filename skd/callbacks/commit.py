"""A checkpoint's files on disk: written atomically under a journal, recorded in a manifest.

:class:`skd.callbacks.checkpoint.Checkpoint` writes every file of a checkpoint
to a temporary file beside it, then renames them all into place under a
journal (:func:`write_journal`, :func:`apply_journal`); a crash between two
renames is finished by :func:`recover_checkpoint`. The manifest, renamed with
the files, holds the epoch and the SHA-256 of each file; :func:`check_manifest`
refuses files that are not the ones it records.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from contextlib import suppress

from skd.data import file_sha256

__all__ = ["JOURNAL", "MANIFEST", "CheckpointError", "CheckpointWarning", "apply_journal", "check_manifest",
           "damaged", "fsync_file", "recover_checkpoint", "temporary_beside", "write_journal",
           "write_manifest"]

#: Name of the journal of a commit in progress, in the checkpoint's directory (after ``fn_prefix``).
JOURNAL = "skd-checkpoint-journal.json"

#: Name of the manifest of the checkpoint (epoch and file hashes), beside its files (after ``fn_prefix``).
MANIFEST = "skd-checkpoint.json"

#: Format tag of the manifest.
MANIFEST_FORMAT = "skd-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from: a file is damaged, missing, or the callbacks cannot replay."""


class CheckpointWarning(UserWarning):
    """A checkpoint could not be written; the previous one is kept."""


def fsync_file(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def temporary_beside(final: str) -> str:
    directory = os.path.dirname(os.path.abspath(final))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(final)}.", suffix=".tmp")
    os.close(fd)
    return temporary


def _is_temporary_of(temporary: str, final: str) -> bool:
    final = os.path.abspath(final)
    return (os.path.dirname(os.path.abspath(temporary)) == os.path.dirname(final)
            and os.path.basename(temporary).startswith(f".{os.path.basename(final)}.")
            and temporary.endswith(".tmp"))


def _key(final: str, dirname: str) -> str:
    """A file's name in the manifest: relative to the checkpoint's directory (which may move)."""
    return os.path.relpath(os.path.abspath(final), os.path.abspath(dirname or "."))


def write_manifest(temporary: str, dirname: str, epoch: int, staged: dict[str, str]) -> None:
    """The epoch and the SHA-256 of every file of the checkpoint (hashed from their temporary files)."""
    manifest = {"format": MANIFEST_FORMAT, "epoch": epoch,
                "files": {_key(final, dirname): file_sha256(tmp) for final, tmp in staged.items()}}
    with open(temporary, "w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def check_manifest(checkpoint, files: dict[str, str], epochs: int) -> bool:
    """Check that ``files`` (``{f_name: path}``, present on disk) are the checkpoint its manifest records.

    Returns False when there is no manifest (a checkpoint written by skorch's
    own ``Checkpoint``: its parts cannot be checked against each other).

    Raises
    ------
    CheckpointError
        If the manifest is unreadable, a file's hash differs from the one
        recorded (edited, or from another epoch or run), or the loaded
        history holds another number of epochs than recorded.
    """
    path = getattr(checkpoint, "manifest_", None)
    if path is None or not os.path.exists(path):
        return False
    try:
        with open(path) as handle:
            manifest = json.load(handle)
        epoch, hashes = int(manifest["epoch"]), dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise damaged(path, error) from error
    fix = ("Restore the files of one checkpoint together, or delete the checkpoint's files to start "
           "afresh; skd.Checkpoint writes them atomically.")
    for name, file in files.items():
        recorded = hashes.get(_key(os.fspath(file), checkpoint.dirname))
        if recorded is not None and file_sha256(os.fspath(file)) != recorded:
            raise CheckpointError(
                f"The checkpoint file {os.fspath(file)} ({name}) is not the one recorded in {path} for "
                f"epoch {epoch}: its SHA-256 differs, so it is damaged or truncated, was edited, or comes "
                f"from another epoch or run, and the checkpoint's files disagree. {fix}"
            )
    if epochs != epoch:
        raise CheckpointError(
            f"The checkpoint's history holds {epochs} epochs, but {path} records a checkpoint of epoch "
            f"{epoch}: the checkpoint's files disagree. {fix}"
        )
    return True


def write_journal(journal: str, staged: dict[str, str]) -> bool:
    """Record the renames to do (atomically); True once the journal is on disk."""
    if not staged:
        return False
    temporary = temporary_beside(journal)
    try:
        with open(temporary, "w") as handle:
            json.dump({"replace": [[tmp, final] for final, tmp in staged.items()]}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, journal)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
    return True


def apply_journal(journal: str, staged: dict[str, str]) -> None:
    """Rename every temporary file over its target, then drop the journal."""
    for final, tmp in staged.items():
        os.replace(tmp, final)
    if staged:
        os.unlink(journal)


def recover_checkpoint(checkpoint) -> bool:
    """Finish a commit of ``checkpoint`` that a crash interrupted; True if there was one.

    Only renames of this checkpoint's own temporary files onto its own files
    are replayed; a journal naming anything else is ignored with a warning.
    """
    journal = getattr(checkpoint, "journal_", None)
    if journal is None or not os.path.exists(journal):
        return False
    try:
        with open(journal) as handle:
            pairs = json.load(handle)["replace"]
        pairs = [(str(tmp), str(final)) for tmp, final in pairs]
    except (OSError, ValueError, KeyError, TypeError) as error:
        warnings.warn(f"The checkpoint journal {journal} is unreadable ({error}); it is ignored.",
                      CheckpointWarning, stacklevel=2)
        return False
    if not all(_is_temporary_of(tmp, final) for tmp, final in pairs):
        warnings.warn(f"The checkpoint journal {journal} names files that are not this checkpoint's "
                      "temporary files; it is ignored.", CheckpointWarning, stacklevel=2)
        return False
    for tmp, final in pairs:
        if os.path.exists(tmp):
            os.replace(tmp, final)
    os.unlink(journal)
    return True


def damaged(path, error) -> CheckpointError:
    return CheckpointError(
        f"The checkpoint file {os.fspath(path)} cannot be read ({type(error).__name__}: {error}). It is "
        "damaged or truncated (a checkpoint written in place by a crashed run?). Restore it, or delete "
        "the checkpoint's files to start afresh; skd.callbacks.checkpoint.Checkpoint writes files atomically."
    )

