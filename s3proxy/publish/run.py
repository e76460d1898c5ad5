"""A whole publish: list, plan, upload, delete, purge, in that order, with what each step
did reported as it happens.

Uploads go first, deletes only once every upload succeeded (a half-failed publish never
removes the pages still being linked to), purges last. A file that fails after its retries
does not stop the others; the publish then ends with :class:`PublishError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from s3proxy.config import OriginConfig
from s3proxy.exceptions import OriginError, PublishError
from s3proxy.publish import purge
from s3proxy.publish.bucket import DELETE_BATCH, Bucket
from s3proxy.publish.headers import CacheRule, object_headers
from s3proxy.publish.plan import MD5_METADATA, LocalFile, Plan, RemoteObject, make_plan
from s3proxy.publish.progress import Progress
from s3proxy.publish.requests import Requests, Tally
from s3proxy.publish.state import JsonFile, target_path
from s3proxy.publish.transfer import Transfer
from s3proxy.publish.tree import local_files, with_digest


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What ``s3proxy publish`` was asked to do (see its ``--help``)."""

    root: str
    origin: OriginConfig
    prefix: str = ""
    state_dir: str
    delete: bool = False
    dry_run: bool = False
    jobs: int = 8
    cache_rules: tuple[CacheRule, ...] = ()
    stats_path: str | None = None
    abort_stale: float | None = None
    purge_urls: tuple[str, ...] = ()
    auth_key: str | None = None
    #: The site of the sites file published to (its proxies' purges name it).
    site: str | None = None


@dataclass(slots=True)
class Summary:
    """What a publish did."""

    plan: Plan
    uploaded: int = 0
    deleted: int = 0
    aborted: int = 0
    failed: list[str] = field(default_factory=list)
    purged: int = 0
    seconds: float = 0.0


async def publish(options: Options, say: Callable[[str], None]) -> Summary:
    """Publish ``options.root``; ``say`` gets the lines a user reads. Raises
    :class:`PublishError` when the bucket cannot be used or any file failed."""
    started = time.monotonic()
    async with Bucket(options.origin, pool=options.jobs + 4) as bucket:
        remote = await _listing(bucket, options.prefix)
        aborted = 0
        if options.abort_stale is not None:
            aborted = await abort_stale(bucket, options, say)
        state = target_path(
            options.state_dir,
            options.origin.endpoint_url or "aws",
            bucket.name,
            options.prefix,
            options.root,
        )
        digests = await asyncio.to_thread(JsonFile, state + ".digests.json")
        files = await _local(options, digests, remote)
        plan = await _plan(bucket, files, remote, options.delete)
        summary = Summary(plan, aborted=aborted)
        if options.dry_run:
            return summary
        requests = Requests(options.jobs)
        transfer = Transfer(bucket, requests, JsonFile(state + ".uploads.json"))
        try:
            await _uploads(transfer, plan.uploads, options, summary, digests.data)
        finally:
            with contextlib.suppress(OSError):  # only a speed-up for the next run
                await asyncio.to_thread(digests.saver())
        if summary.failed:
            raise PublishError(
                f"{len(summary.failed)} of {len(plan.uploads)} files failed "
                f"(first: {summary.failed[0]}); nothing was deleted, run again to resume"
            )
        if plan.deletes:
            for start in range(0, len(plan.deletes), DELETE_BATCH):
                batch = list(plan.deletes[start : start + DELETE_BATCH])
                await requests.call(0, lambda b=batch: bucket.delete(b), Tally())  # type: ignore[misc]
                summary.deleted += len(batch)
    changed = [f.key for f in plan.uploads] + list(plan.deletes)
    if options.purge_urls and changed:
        paths = [purge.path_of(key, options.prefix) for key in changed]
        summary.purged = await purge.purge_all(
            options.purge_urls, options.auth_key, paths, say, options.site
        )
    summary.seconds = time.monotonic() - started
    return summary


async def _listing(bucket: Bucket, prefix: str) -> dict[str, RemoteObject]:
    try:
        return await bucket.listing(prefix)
    except OriginError as exc:
        raise PublishError(_bucket_problem(bucket.name, exc)) from None


def _bucket_problem(name: str, exc: OriginError) -> str:
    """One line on why the bucket cannot be listed."""
    if exc.code == "NoSuchBucket":
        return f"bucket {name!r} does not exist"
    if exc.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"S3 does not accept these credentials ({exc.code})"
    if exc.status == 403:
        return f"S3 refused to list bucket {name!r} (403 {exc.code}): check the credentials"
    return f"cannot list bucket {name!r}: {exc}"


async def _local(
    options: Options, digests: JsonFile, remote: dict[str, RemoteObject]
) -> list[LocalFile]:
    """The tree's files, hashed now only where an object of the same size makes the digest
    decide (the others are hashed as they are sent)."""

    def decides(key: str, size: int) -> bool:
        return key in remote and remote[key].size == size

    try:
        return await asyncio.to_thread(
            local_files, options.root, options.prefix, digests.data, decides
        )
    except OSError as exc:
        raise PublishError(f"cannot read {options.root}: {exc.strerror or exc}") from None


async def _plan(
    bucket: Bucket, files: list[LocalFile], remote: dict[str, RemoteObject], delete: bool
) -> Plan:
    """The plan, with the metadata MD5 of the objects only their metadata can tell about."""
    plan = make_plan(files, remote, delete=delete)
    if not plan.ask:
        return plan
    slots = asyncio.Semaphore(16)

    async def stored(key: str) -> tuple[str, str | None]:
        async with slots:
            _, meta = await bucket.head(key)
        return key, meta.get(MD5_METADATA)

    found = dict(await asyncio.gather(*(stored(key) for key in plan.ask)))
    return make_plan(files, remote, delete=delete, stored_md5=found)


async def _uploads(
    transfer: Transfer,
    uploads: tuple[LocalFile, ...],
    options: Options,
    summary: Summary,
    known: dict[str, list[str | None]],
) -> None:
    """Every upload, ``options.jobs`` files at once, each finished file's line in the stats."""
    progress = Progress(len(uploads), sum(f.size for f in uploads), lambda: transfer.requests.sent)
    stats_file: IO[str] | None = None
    if options.stats_path:
        stats_file = await asyncio.to_thread(open, options.stats_path, "w", encoding="utf-8")
    files = asyncio.Semaphore(options.jobs)

    async def one(file: LocalFile) -> None:
        async with files:
            headers = object_headers(file.key[len(options.prefix) :], options.cache_rules)
            try:
                file = await asyncio.to_thread(with_digest, file, known, options.prefix)
            except OSError as exc:
                summary.failed.append(f"{file.key}: cannot read the file: {exc.strerror}")
                return
            stats = await transfer.upload(file, headers)
            if stats.error is None:
                summary.uploaded += 1
            else:
                summary.failed.append(f"{file.key}: {stats.error}")
            progress.done()
            if stats_file is not None:
                stats_file.write(json.dumps(stats.line()) + "\n")

    try:
        # Ticking outside the group: the line shows until the group has waited for every
        # upload (the other way round it stopped as soon as the tasks were created).
        async with progress.ticking(), asyncio.TaskGroup() as group:
            for file in uploads:
                group.create_task(one(file))
    finally:
        if stats_file is not None:
            stats_file.close()


async def abort_stale(bucket: Bucket, options: Options, say: Callable[[str], None]) -> int:
    """Abort the multipart uploads under the prefix started more than ``abort_stale`` seconds
    ago (in a dry run, only say which)."""
    assert options.abort_stale is not None
    cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=options.abort_stale)
    count = 0
    async for key, upload_id, initiated in bucket.uploads(options.prefix):
        if initiated < cutoff:
            if not options.dry_run:
                await bucket.abort(key, upload_id)
            verb = "would abort" if options.dry_run else "aborted"
            say(f"{verb} the upload of {key} started {initiated:%Y-%m-%d %H:%M} UTC")
            count += 1
    return count
