"""What pack says of the works it could not pack: the rows of rejects.csv, what a rerun retries
(the `transient` ones), and its closing line, or its error when it packed nothing."""

from __future__ import annotations

from artdate.core import store
from artdate.core.works import Work
from artdate.data import shards
from artdate.pack.metadata import Rejected

REJECT_COLUMNS = ["museum", "id", "stage", "reason", "transient", "where"]  # rejects.csv; where: file:line
EXCLUDED = "excluded"  # the stage of works left out by --exclude-types


def reject_row(work: Work, stage: str, reason: str, transient: bool = False) -> dict:
    """A row of rejects.csv; `transient` ones (the server or network failed) are retried by a rerun."""
    return {
        "museum": work.museum,
        "id": work.id,
        "stage": stage,
        "reason": f"{reason}; transient: a rerun retries it" if transient else reason,
        "transient": "yes" if transient else "",
        "where": work.where,
    }


def metadata_reject_row(row: Rejected, stage: str = "metadata") -> dict:
    """A row of rejects.csv for a metadata row that could not be read (or, stage EXCLUDED, whose
    type the export gave is one of --exclude-types)."""
    return {
        "museum": row.museum,
        "id": row.id,
        "stage": stage,
        "reason": row.reason,
        "transient": "",
        "where": row.where,
    }


def transient_rejects(record: shards.ShardRecord) -> int:
    return sum(bool(reject.get("transient")) for reject in record.rejects)


class NothingPacked(Exception):
    """Every work was rejected. The store gets no manifest, so nothing takes it for a finished
    store of no works; rejects.csv says why each failed, and a rerun retries the transient ones."""

    def __init__(self, out: str, rejected: int, transient: int):
        retry = f"; {transient} of them transient: rerun the same command to retry them" if transient else ""
        super().__init__(
            f"packed nothing: all {rejected} works were rejected{retry} (reasons in "
            f"{store.join(out, shards.REJECTS)}); {out} is left unfinished, without a manifest"
        )
        self.transient = transient


def summary_line(manifest: dict, out: str) -> str:
    mb = manifest["bytes"] / 1e6
    transient = manifest.get("transient", 0)
    retry = f" ({transient} transient: rerun the same command to retry them)" if transient else ""
    excluded = f", excluded {manifest['excluded']} by type" if manifest.get("excluded") else ""
    if manifest.get("not_public_domain"):
        excluded += f", {manifest['not_public_domain']} not public domain (never requested)"
    undated = manifest["splits"]["undated"]["samples"]
    to_date = f" ({undated} undated, to date: never trained on)" if undated else ""
    return (
        f"packed {manifest['packed']}{to_date}, rejected {manifest['rejected']}{retry}{excluded}, "
        f"{len(manifest['shards'])} shards, {mb:.1f} MB -> {out}"
        f" (dropped {manifest['duplicates_dropped']} duplicate rows,"
        f" {manifest['out_of_window']} outside the year window)"
    )
