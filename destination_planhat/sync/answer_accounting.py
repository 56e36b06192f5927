"""What Planhat's answer to a batch means for the books: the ledger's counts, the counts on states,
the records Planhat rejected (stored, when there is a store of rejected records), and the batch's
line in the log.

Why apart from the sender: the sender (sync/sender.py) decides how a batch travels (threads, lanes,
halves after a 413); this decides what an answer says about each record of the batch. The sender
accounts an answer before it acknowledges the batch to the state barrier, so the counts on the
next state include it and the rejected records it names are in the store before that state.
"""

from __future__ import annotations

import logging
from typing import Optional

import orjson

from destination_planhat.planhat.answers import PostResult
from destination_planhat.rejected.records import MISSING, REJECTED_BY_PLANHAT, RejectedRecords
from destination_planhat.sync.batching import Batch
from destination_planhat.sync.ledger import Ledger
from destination_planhat.sync.object_batching import ObjectBatch
from destination_planhat.sync.state_stats import StateCounts, frozen_json, pair_rejected

logger = logging.getLogger("airbyte")

SAMPLE_ERRORS = 3
SAMPLE_CHARS = 300
PAYLOAD_TOO_LARGE_REASON = "too large for Planhat (HTTP 413)"


class AnswerAccounting:
    def __init__(self, ledger: Ledger, counts: StateCounts, rejected: Optional[RejectedRecords] = None) -> None:
        """`rejected`: where the records Planhat rejects are stored (object_storage_config), if anywhere."""
        self._ledger = ledger
        self._counts = counts
        self._rejected = rejected

    def resent(self, batch: Batch, ambiguous_failures: int) -> None:
        """A request that failed (for good, or with a 413 before its halves go) after attempts Planhat may
        have received: the copies Planhat may have kept still count."""
        if ambiguous_failures:
            self._ledger.count(batch.route.name, resent_after_ambiguous_failure=len(batch) * ambiguous_failures)

    def too_large(self, batch: Batch, label: str, body: str) -> None:
        """An analytics batch of one item that Planhat refused as too large (HTTP 413): that item is rejected."""
        self._ledger.record_answer(batch.route.name, 1, 0, [PAYLOAD_TOO_LARGE_REASON], 0)
        ordinal, several = batch.ordinal_at(0)
        self._counts.reject(batch.route.name, ordinal, several_items=several)
        if self._rejected is not None:
            self._store(batch, ordinal, batch.items()[0], PAYLOAD_TOO_LARGE_REASON)
        logger.warning(f"{label}: Planhat refused one item as too large (HTTP 413): {body}")

    def refused_object(
        self, batch: ObjectBatch, label: str, status: Optional[int], body: str, *, too_large: bool
    ) -> None:
        """An object batch of one item that Planhat refused as a whole (a 413, or a 400 without per-item errors)."""
        reason = PAYLOAD_TOO_LARGE_REASON if too_large else f"refused by Planhat (HTTP {status}): {body}"
        self.object_answer(batch, label, PostResult(processed=0, errors=[], created=0, updated=0), [reason])

    def answer(self, batch: Batch, label: str, result: PostResult) -> None:
        """Planhat's answer to an analytics batch: processed and rejected items."""
        stream = batch.route.name
        resent = len(batch) * result.ambiguous_failures
        rejected = self._ledger.record_answer(
            stream, len(batch), result.processed, [e.reason for e in result.errors], resent, attempts=result.attempts
        )
        if rejected:
            self._count_rejected_records(batch, result, rejected)
        line = f"{label} -> {batch.endpoint.label}: sent {len(batch)}"
        if result.processed is None:
            logger.warning(f"{line}; Planhat acknowledged the request without counts ({result.note})")
        else:
            line += f", processed {result.processed}, errors {len(result.errors)}"
            if result.attempts > 1:
                line += f" (after {result.attempts} attempts)"
            for error in result.errors[:SAMPLE_ERRORS]:
                sample = orjson.dumps(error.item).decode()[:SAMPLE_CHARS]
                line += f"; e.g. {sample} -> {error.reason}"
            # A clean batch (all processed at the first attempt) is DEBUG: the progress line counts it.
            logger.log(logging.INFO if result.errors or result.attempts > 1 else logging.DEBUG, line)
            if result.processed + len(result.errors) != len(batch):
                logger.warning(
                    f"{label}: Planhat counted {result.processed} processed and {len(result.errors)} errors "
                    f"for {len(batch)} items sent"
                )
        if resent:
            logger.warning(
                f"{label}: re-sent {len(batch)} items after {result.ambiguous_failures} failure(s) where Planhat may "
                "already have received them: these items may be counted twice in Planhat"
            )

    def _count_rejected_records(self, batch: Batch, result: PostResult, rejected: int) -> None:
        """Which records Planhat's rejections belong to, for the counts on states. Positions matter only
        when the batch holds records of more than one state's window, or records with several items;
        otherwise all `rejected` are single records of one window."""
        stream = batch.route.name
        first, _ = batch.ordinal_at(0)
        last, _ = batch.ordinal_at(len(batch) - 1)
        errors = result.errors[:rejected]
        one_run = batch.one_item_per_record and self._counts.same_windows(stream, first, last)
        if one_run:  # the counts need no pairing: every rejected item is one record of one window
            self._counts.reject_run(stream, first, rejected)
            if self._rejected is None:
                return
        items = batch.items()
        pairs = pair_rejected(items, [error.item for error in errors])
        if not one_run:
            self._counts.reject_all(stream, (batch.ordinal_at(position) for position, _, _ in pairs))
        if self._rejected is not None:
            for position, index, matched in pairs:
                error = errors[index]
                self._store(
                    batch, batch.ordinal_at(position)[0], items[position], error.reason, None if matched else error.item
                )

    def _store(self, batch: Batch, ordinal: int, item: object, reason: str, echoed: object = None) -> None:
        """One record Planhat rejected, with the item as sent; with what Planhat's answer repeated when it
        differs (the answer's item was not found in the batch, so which record it was is a guess)."""
        assert self._rejected is not None
        namespace, name = batch.route.key
        differs = echoed is not None and _frozen_or_none(echoed) != _frozen_or_none(item)
        self._rejected.add(
            namespace,
            name,
            record_number=ordinal + 1,
            rejected_by=REJECTED_BY_PLANHAT,
            reason=reason,
            target=batch.endpoint.value,
            item=item,
            planhat_item=echoed if differs else MISSING,
        )

    def object_answer(
        self, batch: ObjectBatch, label: str, result: PostResult, reasons: Optional[list[str]] = None
    ) -> None:
        stream = batch.route.name
        resent = len(batch) * result.ambiguous_failures
        reasons = reasons if reasons is not None else [error.reason for error in result.errors]
        rejected = self._ledger.record_answer(
            stream,
            len(batch),
            result.processed,
            reasons,
            resent,
            attempts=result.attempts,
            created=result.created,
            updated=result.updated,
            unchanged=result.unchanged,
        )
        if rejected:
            errors = result.errors[:rejected]
            items = batch.items() if len(batch) > 1 or self._rejected is not None else []
            pairs = [(0, 0, True)] if len(batch) == 1 else pair_rejected(items, [error.item for error in errors])
            # A merged item's answer is the answer for every record merged into it.
            self._counts.reject_all(stream, ((o, False) for p, _, _ in pairs for o in batch.records[p]))
            if self._rejected is not None:
                for position, index, matched in pairs:
                    echoed = errors[index].item if index < len(errors) and not matched else None
                    reason = reasons[index] if index < len(reasons) else "rejected by Planhat"
                    for ordinal in batch.records[position]:
                        self._store(batch, ordinal, items[position], reason, echoed)
        line = f"{label} -> {batch.endpoint.label}: sent {len(batch)}"
        if result.processed is None:
            logger.warning(f"{line}; Planhat acknowledged the request without counts ({result.note})")
        else:
            line += (
                f", created {result.created or 0}, updated {result.updated or 0} (unchanged {result.unchanged or 0}), "
                f"refused {len(reasons)}"
            )
            if result.attempts > 1:
                line += f" (after {result.attempts} attempts)"
            for error in result.errors[:SAMPLE_ERRORS]:
                sample = orjson.dumps(error.item).decode()[:SAMPLE_CHARS]
                line += f"; e.g. {sample} -> {error.reason}"
            if reasons and not result.errors:
                line += f"; {reasons[0]}"
            logger.log(logging.INFO if reasons or result.attempts > 1 else logging.DEBUG, line)
        if resent:
            logger.warning(
                f"{label}: re-sent {len(batch)} items after {result.ambiguous_failures} failure(s) where Planhat may "
                "already have received them (an upsert on a key applies them again; with match_on: none they may "
                "be created twice)"
            )


def _frozen_or_none(value: object) -> object:
    try:
        return frozen_json(value)
    except TypeError:
        return None
