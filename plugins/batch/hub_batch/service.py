"""The batch plugin's work: submit jobs, poll them in the background, fetch, cancel, report.

Several hubs share one store. A job being submitted belongs to the hub submitting it (`owner`);
if that hub dies, the hub that recovers after it (`recover`) settles the job: each API batch whose
create call had begun (`create_started_at`) but not answered is looked for at the API and adopted,
and only if the API shows none is a batch taken as never sent. A job being polled has one poller
at a time (`lease_owner`): a hub polls and downloads only jobs whose lease it holds, and takes the
lease over only from a hub that is dead (or stopped renewing it).
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.to_thread

from hub import HEARTBEAT_S, BudgetExceeded, ConfigError, Instance, ToolCall, ToolError, expand_vars

from .backends import BACKENDS, Backend, BackendError
from .jobs import ENDED_STATES, OPEN_STATES, Jobs, add_counts, final_state
from .pricing import Price, PriceTable
from .results import ResultWriter
from .spool import Defaults, PacketReader, Part, RequestItem, Spooled, jsonl_items, spool

if TYPE_CHECKING:
    from hub import PluginContext, Reservation

    from . import SendArgs, Settings
    from .backends.vertex import VertexConfig

MAX_IDLE_WAIT_S = 300.0
# A poller's lease lasts until its next poll is due plus this; a live hub renews it at each poll.
LEASE_GRACE_S = 600.0
# Clock difference allowed between this machine and the API when matching a batch to its create.
CLOCK_SKEW_S = 120.0


def all_ended(parts: list[dict[str, Any]]) -> bool:
    """Every batch the job sent has ended (a batch never sent, after a failed submission, has nothing to wait for)."""
    return all(p["processing_status"] == "ended" or not p["remote_id"] for p in parts)


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    return f"job_{datetime.now(UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"


class BatchService:
    def __init__(self, hub: PluginContext, settings: Settings) -> None:
        self.hub = hub
        self.settings = settings
        self.jobs = Jobs(hub.store)
        overrides = {name: Price(p.input_per_mtok, p.output_per_mtok) for name, p in settings.prices.items()}
        self.prices = PriceTable(overrides)
        roots = [Path(root).expanduser().resolve() for root in settings.packet_roots]
        self.reader = PacketReader(
            roots,
            settings.max_packet_bytes,
            settings.max_requests_file_bytes,
            settings.max_request_line_bytes,
        )
        self.results_dir = Path(settings.results_dir).expanduser()
        self.spool_dir = hub.settings.state_dir / "batch" / "spool"
        self._backends: dict[str, Backend] = {}
        self._wake = anyio.Event()
        self._locks: dict[str, anyio.Lock] = {}
        self.traces: dict[str, Any] = {}  # job id -> the trace context it was sent in (telemetry on)

    # -- backends --------------------------------------------------------------------------

    def backend(self, name: str) -> Backend:
        name, _ = self.choose_backend(name)
        if name not in self._backends:
            if name == "vertex":
                from .backends.vertex import VertexBackend

                try:
                    self._backends[name] = VertexBackend(self._vertex_config())
                except BackendError as exc:
                    raise ToolError(str(exc)) from None
                return self._backends[name]
            from .backends.anthropic import AnthropicBackend

            key = self._anthropic_key()
            if not key:
                raise ToolError(
                    'no Anthropic API key: set ANTHROPIC_API_KEY, or [plugins.batch] api_key = "${MY_KEY_VARIABLE}"'
                )
            self._backends[name] = AnthropicBackend(api_key=key, base_url=self.settings.base_url or None)
        return self._backends[name]

    def choose_backend(self, name: str) -> tuple[str, str]:
        """The backend a job asking for `name` goes to, and why. "auto" follows [plugins.batch]
        backend; if that is "auto" too: Anthropic when an API key is set, else Vertex when
        [plugins.batch.vertex] is configured."""
        if name == "auto" and self.settings.backend != "auto":
            return self.settings.backend, "[plugins.batch] backend"
        if name in BACKENDS:
            return name, "asked for"
        if name != "auto":
            raise ToolError(f"unknown backend {name!r}: use auto, {' or '.join(BACKENDS)}")
        if self._anthropic_key():
            return "anthropic", "auto: an Anthropic API key is set"
        from .backends.vertex import SETTINGS_HELP, resolve

        config, _ = resolve(self.settings.vertex, self._expand)
        if config is not None:
            return "vertex", "auto: no Anthropic API key, and [plugins.batch.vertex] is configured"
        raise ToolError(
            "no batch backend is configured: for Anthropic set ANTHROPIC_API_KEY (or [plugins.batch] "
            f"api_key); for Vertex AI set {SETTINGS_HELP}"
        )

    def _expand(self, text: str, where: str) -> str:
        try:
            return expand_vars(text, os.environ, where=where)
        except ConfigError as exc:
            raise ToolError(str(exc)) from None

    def _anthropic_key(self) -> str:
        return self._expand(self.settings.api_key, "plugins.batch.api_key")

    def _vertex_config(self) -> VertexConfig:
        from .backends.vertex import SETTINGS_HELP, resolve

        config, missing = resolve(self.settings.vertex, self._expand)
        if config is None:
            raise ToolError(
                f"the vertex backend is not configured (missing: {', '.join(missing)}): set {SETTINGS_HELP}"
            )
        return config

    async def aclose(self) -> None:
        for backend in self._backends.values():
            with contextlib.suppress(Exception):
                await backend.aclose()

    # -- start -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.jobs.setup()
        for job in await self.jobs.find(["submitting"]):
            if job["owner"] is None:  # left by a hub from before owners
                await self._recover_submission(job)
        await self._release_orphaned_reservations()
        await self.update_status_line()

    async def recover(self, instance: Instance) -> None:
        """Settle what dead hub `instance` left: jobs it was submitting, the polls it held."""
        for job in await self.jobs.find(["submitting"], owner=instance.id):
            await self._recover_submission(
                job, "its hub stopped", created_by=instance.heartbeat_at + 2 * HEARTBEAT_S
            )
        if await self.jobs.release_leases(instance.id):
            self._wake.set()  # the jobs it polled are due now
        await self._release_orphaned_reservations()
        await self.update_status_line()

    async def stop(self) -> None:
        """Hand the jobs this hub polls to whichever hub polls next."""
        await self.jobs.release_leases(self.hub.instance_id)

    async def _release_orphaned_reservations(self) -> None:
        """A reservation whose job ended, or whose job was never recorded because its hub died in
        between, is settled (a live hub may be between the two steps: its reservations stay)."""
        for reservation in await self.hub.budget.durable_reservations():
            job = await self.jobs.find_by_reservation(reservation.id)
            if job is None and await self.hub.instances.is_alive(reservation.owner):
                continue
            ended = job is None or job["state"] in ENDED_STATES
            if ended and await reservation.commit(job["cost_usd"] if job is not None else 0.0):
                self.hub.log.info(
                    "released a reservation left by an interrupted job", reservation=reservation.id
                )

    async def _recover_submission(
        self, job: dict[str, Any], why: str = "the hub stopped", created_by: float | None = None
    ) -> None:
        """Settle a job left in 'submitting': an API batch whose create had begun but not
        answered is looked for and adopted (created between the call and `created_by`); then all
        sent goes on; part sent is cancelled (what ran is still fetched and paid for); nothing
        sent fails."""
        self._drop_spool(job["id"])
        parts = await self.jobs.parts(job["id"])
        adopted = await self._adopt(job, parts, created_by) if created_by is not None else []
        sent = [p for p in parts if p["remote_id"]]
        if parts and len(sent) == len(parts):
            await self.jobs.update(job["id"], state="in_progress", next_poll_at=0)
            if adopted:
                self.hub.log.warning(
                    "a job's submission was cut short; its batches were found at the API and kept",
                    job=job["id"],
                    adopted=adopted,
                )
            self._wake.set()
            return
        if not sent:
            asked = created_by is not None and any(p["create_started_at"] for p in parts)
            await self._fail(
                job,
                f"{why} while this job was being submitted; "
                + (
                    "the API shows no batch made for it, so nothing was sent" if asked else "nothing was sent"
                ),
            )
            return
        for part in sent:
            with contextlib.suppress(BackendError, ToolError):
                await self.backend(job["backend"]).cancel(part["remote_id"])
        await self.jobs.update(
            job["id"],
            state="canceling",
            next_poll_at=0,
            error=f"{why} after {len(sent)} of {len(parts)} batches were sent; those were cancelled",
        )
        self._wake.set()
        self.hub.log.warning("a job was interrupted during submission", job=job["id"], sent=len(sent))

    async def _adopt(self, job: dict[str, Any], parts: list[dict[str, Any]], created_by: float) -> list[str]:
        """Find at the API the batches whose create call began but never answered; record them."""
        asked = [p for p in parts if p["create_started_at"] and not p["remote_id"]]
        if not asked:
            return []
        backend = self.backend(job["backend"])
        known = await self.jobs.remote_ids()
        adopted = []
        for part in asked:
            name = f"{job['id']}-{part['part']}"
            since = part["create_started_at"] - CLOCK_SKEW_S
            try:
                found = await backend.find_created(name, part["request_count"], since)
            except BackendError as exc:
                raise ToolError(f"cannot tell whether job {job['id']} was sent: {exc}") from None
            for remote in found:
                created = _epoch(remote.created_at)
                if remote.id in known or (created is not None and created > created_by + CLOCK_SKEW_S):
                    continue
                await self.jobs.update_part(
                    job["id"],
                    part["part"],
                    remote_id=remote.id,
                    processing_status=remote.processing_status,
                    counts=remote.request_counts,
                    created_at=remote.created_at,
                    expires_at=remote.expires_at,
                )
                part.update(remote_id=remote.id, processing_status=remote.processing_status)
                known.add(remote.id)
                adopted.append(remote.id)
                break
        return adopted

    async def _fail(self, job: dict[str, Any], error: str) -> None:
        with anyio.CancelScope(shield=True):  # settled and marked together, or the restart does it
            await self._settle(job, 0.0)
            await self.jobs.update(job["id"], state="failed", error=error, ended_at=_now_iso())

    async def _settle(self, job: dict[str, Any], cost: float) -> None:
        """Commit the job's actual cost and release the rest of its reservation, once: a job whose
        reservation is already closed was settled before (by a run that stopped right after)."""
        if job.get("reservation_id"):
            reservation = await self.hub.budget.reservation(job["reservation_id"])
            if reservation is not None:
                await reservation.commit(cost)
        elif cost:
            await self.hub.budget.record(cost, f"batch job {job['id']}")

    # -- send --------------------------------------------------------------------------------

    def _items(self, args: SendArgs) -> Iterable[RequestItem]:
        if args.requests_path is not None:
            return jsonl_items(self.reader, args.requests_path)
        if args.requests is not None:
            return args.requests
        if args.packet_path is not None:
            return [RequestItem(custom_id=args.custom_id, packet_path=args.packet_path)]
        return [RequestItem(custom_id=args.custom_id, prompt=args.packet_text)]

    async def send(self, args: SendArgs) -> dict[str, Any]:
        """Submit a job: check and spool its requests, record it, reserve what it may cost, send
        its batches, and hand it to the poller. Returns what `send_to_batch` answers."""
        self._check_send_input(args)
        backend = self.backend(args.backend)
        backend_choice = self.choose_backend(args.backend)[1]
        job_id = new_job_id()
        self.traces[job_id] = self.hub.telemetry.current()  # parents the job's span (telemetry on)
        model = args.model or self.settings.model
        defaults = await self._defaults(args, model)
        result_path = self.results_dir / f"{job_id}.md"
        raw_path = self.results_dir / f"{job_id}.raw.jsonl"
        spooled, pending_rows = await self._spool(job_id, self._items(args), defaults, backend)
        await self.jobs.create(
            job_id,
            label=args.label,
            backend=backend.name,
            model=model,
            result_path=str(result_path),
            raw_path=str(raw_path),
            owner=self.hub.instance_id,
        )
        for rows in pending_rows:
            await self.jobs.add_requests(job_id, rows)
        for unknown in sorted(spooled.unknown_models):
            self.hub.log.warning("no price for this model; priced as the most expensive", model=unknown)
        count = sum(p.count for p in spooled.parts)
        reservation = await self._reserve(job_id, spooled.reserve_usd, count)
        job = await self.jobs.get(job_id)
        assert job is not None
        await self._submit_or_settle(job, backend, spooled.parts)
        await self._start_polling(job_id, count)
        self._wake.set()
        await self.update_status_line()
        self.hub.log.info(
            "batch job submitted",
            job=job_id,
            requests=count,
            batches=len(spooled.parts),
            backend=backend.name,
            backend_choice=backend_choice,
        )
        return {
            "job_id": job_id,
            "backend": backend.name,
            "backend_choice": backend_choice,
            "state": "in_progress",
            "label": args.label,
            "requests": count,
            "batches": len(spooled.parts),
            "models": sorted(spooled.models),
            "reserved_usd": reservation.reserved_usd,
            "result_path": str(result_path),
            "raw_path": str(raw_path),
        }

    @staticmethod
    def _check_send_input(args: SendArgs) -> None:
        """Refuse a call that gives no input, more than one kind, or an empty one."""
        given = [
            n
            for n in ("packet_path", "packet_text", "requests", "requests_path")
            if getattr(args, n) is not None
        ]
        if len(given) != 1:
            raise ToolError(
                "give exactly one of packet_path, packet_text, requests or requests_path"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if args.packet_text is not None and not args.packet_text.strip():
            raise ToolError("packet_text is empty")
        if args.requests is not None and not args.requests:
            raise ToolError("requests is empty")

    async def _defaults(self, args: SendArgs, model: str) -> Defaults:
        """What every request of the job gets unless it says otherwise."""
        context = await self.hub.context.as_prompt() if args.use_context else ""
        return Defaults(
            model=model,
            max_tokens=args.max_tokens or self.settings.max_tokens,
            system=args.system or self.settings.system or None,
            temperature=args.temperature,
            thinking_budget=args.thinking_budget,
            context=context,
        )

    async def _spool(
        self, job_id: str, items: Iterable[RequestItem], defaults: Defaults, backend: Backend
    ) -> tuple[Spooled, list[list[tuple[str, int, str]]]]:
        """Write the job's request bodies to its spool files (in a worker thread); returns them and
        the request rows to record once the job row exists. Nothing is left behind on an error."""
        # The job row is created once the input was read and checked; until then rows wait here.
        pending_rows: list[list[tuple[str, int, str]]] = []

        def store_rows(rows: list[tuple[str, int, str]]) -> None:
            pending_rows.append(list(rows))

        try:
            spooled = await anyio.to_thread.run_sync(
                lambda: spool(
                    items,
                    directory=self.spool_dir,
                    job_id=job_id,
                    defaults=defaults,
                    reader=self.reader,
                    prices=self.prices,
                    max_requests=self.settings.max_requests_per_batch,
                    max_bytes=self.settings.max_bytes_per_batch,
                    max_total=self.settings.max_requests_per_job,
                    on_rows=store_rows,
                    one_model_per_part=backend.one_model_per_batch,
                )
            )
        except BaseException:
            self._drop_spool(job_id)
            raise
        return spooled, pending_rows

    async def _reserve(self, job_id: str, reserve_usd: float, count: int) -> Reservation:
        """Reserve what the job may cost and record it; a job the budget refuses is deleted."""
        try:
            reservation = await self.hub.budget.reserve(
                reserve_usd,
                f"batch job {job_id}",
                durable=True,
                lower="send fewer requests or lower their max_tokens",
            )
        except BudgetExceeded as exc:
            await self.jobs.delete(job_id)
            self._drop_spool(job_id)
            raise ToolError(str(exc)) from None
        await self.jobs.update(
            job_id,
            request_count=count,
            reservation_id=reservation.id,
            reserved_usd=reservation.reserved_usd,
        )
        return reservation

    async def _submit_or_settle(self, job: dict[str, Any], backend: Backend, parts: list[Part]) -> None:
        """Send the job's batches; if that stops half-way, settle the job at once and say so."""
        job_id = job["id"]
        try:
            await self._submit_parts(job, backend, parts)
        except BaseException as exc:
            # Refused, cancelled or worse half-way: settle the job now rather than leave it 'submitting'.
            refused = isinstance(exc, BackendError)
            with anyio.CancelScope(shield=True):
                await self._recover_submission(
                    job, "the API refused a batch" if refused else "the call ended"
                )
                await self.update_status_line()
            if not refused:
                raise
            after = await self.jobs.get(job_id) or {}
            if after.get("state") == "canceling":
                raise ToolError(
                    f"job {job_id} was not submitted in full: {exc}. {after['error']}; the job ends when they "
                    "have, and what ran is fetched and paid for"
                ) from None
            raise ToolError(f"job {job_id} was not submitted: {exc}") from None

    async def _start_polling(self, job_id: str, count: int) -> None:
        """Mark a job sent in full `in_progress`, its poll lease held by this hub."""
        with anyio.CancelScope(shield=True):
            next_poll = time.time() + self._delay(0)
            await self.jobs.update(
                job_id,
                state="in_progress",
                counts=add_counts([{"processing": count}]),
                next_poll_at=next_poll,
                lease_owner=self.hub.instance_id,
                lease_until=next_poll + LEASE_GRACE_S,
            )

    async def _submit_parts(self, job: dict[str, Any], backend: Backend, parts: list[Any]) -> None:
        job_id = job["id"]
        for index, part in enumerate(parts):
            await self.jobs.add_part(job_id, index, part.count, part.size)
        for index, part in enumerate(parts):
            # The intent first: if this hub dies before the answer, the batch can still be found.
            await self.jobs.update_part(job_id, index, create_started_at=time.time())
            remote = await backend.create(part.path, part.size, f"{job_id}-{index}")
            await self.jobs.update_part(
                job_id,
                index,
                remote_id=remote.id,
                processing_status=remote.processing_status,
                counts=remote.request_counts,
                created_at=remote.created_at,
                expires_at=remote.expires_at,
            )
            part.path.unlink(missing_ok=True)

    def _drop_spool(self, job_id: str) -> None:
        for path in self.spool_dir.glob(f"{job_id}.*.json"):
            path.unlink(missing_ok=True)

    # -- polling -------------------------------------------------------------------------------

    def _delay(self, attempt: int) -> float:
        s = self.settings
        base = min(s.poll_max_s, s.poll_initial_s * s.poll_factor**attempt)
        return base * random.uniform(1 - s.poll_jitter, 1 + s.poll_jitter)

    def _lock(self, job_id: str) -> anyio.Lock:
        return self._locks.setdefault(job_id, anyio.Lock())

    async def poll_job(self, job_id: str) -> dict[str, Any]:
        """Ask the API about an open job; download and settle it once every batch has ended."""
        async with self._lock(job_id):
            job = await self.jobs.get(job_id)
            if job is None or job["state"] not in ("in_progress", "canceling"):
                return job or {}
            if not await self._take_lease(job_id, max(job["next_poll_at"], time.time())):
                return job  # another live hub polls it; the store shows what it found
            backend = self.backend(job["backend"])
            try:
                parts = await self.jobs.parts(job_id)
                for part in parts:
                    if part["processing_status"] == "ended" or not part["remote_id"]:
                        continue
                    remote = await backend.retrieve(part["remote_id"])
                    part.update(processing_status=remote.processing_status, counts=remote.request_counts)
                    await self.jobs.update_part(
                        job_id,
                        part["part"],
                        processing_status=remote.processing_status,
                        counts=remote.request_counts,
                        ended_at=remote.ended_at,
                    )
                counts = add_counts(p["counts"] for p in parts)
                if all_ended(parts):
                    await self.jobs.update(job_id, counts=counts)
                    return await self._download(job, parts)
                attempts = job["poll_attempts"] + 1
                next_poll = time.time() + self._delay(attempts)
                await self.jobs.update(
                    job_id,
                    counts=counts,
                    poll_attempts=attempts,
                    poll_error=None,
                    next_poll_at=next_poll,
                    lease_until=next_poll + LEASE_GRACE_S,
                )
            except BackendError as exc:
                attempts = job["poll_attempts"] + 1
                self.hub.log.warning("polling a batch job failed; will retry", job=job_id, error=str(exc))
                if exc.status == 404:
                    await self._fail(job, f"the API no longer knows this job's batch: {exc}")
                    await self.update_status_line()
                else:
                    await self.jobs.update(
                        job_id,
                        poll_attempts=attempts,
                        poll_error=str(exc),
                        next_poll_at=time.time() + self._delay(attempts),
                    )
            refreshed = await self.jobs.get(job_id)
            assert refreshed is not None
            return refreshed

    async def _take_lease(self, job_id: str, due: float) -> bool:
        return await self.jobs.take_lease(
            job_id, self.hub.instance_id, due + LEASE_GRACE_S, self.hub.instances.is_alive
        )

    async def _download(
        self, job: dict[str, Any], parts: list[dict[str, Any]], *, settle: bool = True
    ) -> dict[str, Any]:
        backend = self.backend(job["backend"])
        writer = ResultWriter(job, self.prices, lambda custom_id: job["model"])

        async def record(rows: list[dict[str, Any]]) -> None:
            await self.jobs.record_outcomes(job["id"], rows)
            if settle:  # a long download keeps its lease
                await self.jobs.update(job["id"], lease_until=time.time() + LEASE_GRACE_S)

        try:
            for part in parts:
                if part["remote_id"]:
                    async with backend.result_lines(part["remote_id"]) as lines:
                        await writer.add_lines(lines, record)
        except BaseException:
            writer.discard()
            raise
        counts = writer.tally.counts
        state = final_state(counts, job["request_count"])
        writer.finish(state)
        cost = round(writer.tally.cost_usd, 6)
        with anyio.CancelScope(shield=True):  # a cancelled caller must not leave it half-settled
            if settle:
                await self._settle(job, cost)
            await self.jobs.update(
                job["id"],
                state=state,
                counts=counts,
                cost_usd=cost,
                ended_at=job.get("ended_at") or _now_iso(),
                fetched_at=_now_iso(),
                poll_error=None,
                **({"lease_owner": None, "lease_until": None} if settle else {}),
            )
        await self.update_status_line()
        self._job_span(job, state, cost)
        self.hub.log.info("batch job ended", job=job["id"], state=state, cost_usd=cost)
        refreshed = await self.jobs.get(job["id"])
        assert refreshed is not None
        return refreshed

    def _job_span(self, job: dict[str, Any], state: str, cost: float) -> None:
        """A span ``batch job`` from the job's creation to its end (telemetry on), a child of the
        call that sent it when this process sent it."""
        if not self.hub.telemetry.on:
            return
        attributes = {
            "batch.job_id": job["id"],
            "batch.backend": job["backend"],
            "batch.state": state,
            "batch.requests": job["request_count"],
            "batch.cost_usd": cost,
        }
        started = _epoch(job["created_at"])
        parent = self.traces.pop(job["id"], None)
        with self.hub.telemetry.span("batch job", attributes=attributes, parent=parent, start_time=started):
            pass

    async def poll_loop(self) -> None:
        """Poll open jobs when they are due; sleep while there is nothing to do. Never ends on an
        error: it logs it and tries again later."""
        failures = 0
        while True:
            try:
                await self._poll_pass()
                failures = 0
            except Exception:
                failures += 1
                self.hub.log.exception("the batch poller failed; trying again", failures=failures)
                await anyio.sleep(self._delay(failures))

    async def _poll_pass(self) -> None:
        """Poll the due jobs once, then wait until the next is due or a job is sent."""
        self._wake = anyio.Event()
        open_jobs = await self.jobs.find(["in_progress", "canceling"])
        now = time.time()
        for job in open_jobs:
            if job["next_poll_at"] <= now:
                try:
                    await self.poll_job(job["id"])
                except Exception:  # never let one job stop the loop
                    self.hub.log.exception("polling a job raised", job=job["id"])
                    await self.jobs.update(
                        job["id"], next_poll_at=time.time() + self._delay(job["poll_attempts"] + 1)
                    )
        open_jobs = await self.jobs.find(["in_progress", "canceling"])
        wait = min((j["next_poll_at"] for j in open_jobs), default=now + MAX_IDLE_WAIT_S) - time.time()
        with anyio.move_on_after(max(0.0, min(wait, MAX_IDLE_WAIT_S))):
            await self._wake.wait()

    async def poll_once(self) -> dict[str, Any]:
        completed, still_open, errors = [], [], {}
        jobs = await self.jobs.find(["in_progress", "canceling"])
        for job in jobs:
            after = await self.poll_job(job["id"])
            if after.get("state") in ENDED_STATES:
                completed.append(
                    {"job_id": job["id"], "state": after["state"], "result_path": after["result_path"]}
                )
            else:
                still_open.append(job["id"])
                if after.get("poll_error"):
                    errors[job["id"]] = after["poll_error"]
        return {"checked": len(jobs), "completed": completed, "still_open": still_open, "errors": errors}

    # -- reading -------------------------------------------------------------------------------

    async def job_or_error(self, job_id: str) -> dict[str, Any]:
        job = await self.jobs.get(job_id)
        if job is None:
            recent = ", ".join(j["id"] for j in await self.jobs.find(limit=5)) or "none"
            raise ToolError(f"no batch job {job_id!r} (recent jobs: {recent})")
        return job

    def describe(self, job: dict[str, Any], parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        out = {
            "job_id": job["id"],
            "label": job["label"],
            "backend": job["backend"],
            "state": job["state"],
            "model": job["model"],
            "requests": job["request_count"],
            "request_counts": job["counts"],
            "created_at": job["created_at"],
            "ended_at": job["ended_at"],
            "reserved_usd": job["reserved_usd"],
            "cost_usd": job["cost_usd"],
            "result_path": job["result_path"],
            "raw_path": job["raw_path"],
        }
        if parts is not None:
            open_job = job["state"] in OPEN_STATES
            canceling = any(p["processing_status"] == "canceling" for p in parts)
            out["processing_status"] = (
                "ended"
                if not open_job or (parts and all_ended(parts))
                else "canceling"
                if canceling
                else "in_progress"
            )
            out["batches"] = [
                {
                    "id": p["remote_id"],
                    "processing_status": p["processing_status"],
                    "requests": p["request_count"],
                    "request_counts": p["counts"],
                }
                for p in parts
            ]
        if job["error"]:
            out["error"] = job["error"]
        if job["poll_error"]:
            out["last_poll_error"] = job["poll_error"]
        return out

    async def status(self, job_id: str) -> dict[str, Any]:
        job = await self.job_or_error(job_id)
        if job["state"] in ("in_progress", "canceling"):
            job = await self.poll_job(job_id)
        return self.describe(job, await self.jobs.parts(job_id))

    async def fetch(self, job_id: str, force: bool, wait_s: float, call: ToolCall) -> dict[str, Any]:
        job = await self.job_or_error(job_id)
        if job["state"] == "submitting":
            raise ToolError(f"job {job_id} is still being submitted; try again in a moment")
        deadline = time.monotonic() + wait_s
        while job["state"] in ("in_progress", "canceling"):
            job = await self.poll_job(job_id)
            if job["state"] not in OPEN_STATES:
                break
            counts = job["counts"]
            total = job["request_count"] or 1
            await call.report_progress(
                total - counts.get("processing", total), total, f"{job_id}: {job['state']}"
            )
            if time.monotonic() >= deadline:
                processing = counts.get("processing", job["request_count"])
                raise ToolError(
                    f"job {job_id} has not ended: {job['state']}, {processing} of {job['request_count']} request(s) "
                    "still processing. Most batches end within an hour (at most 24 h); call batch_fetch again "
                    "later, or pass wait_s to wait here."
                    + (f" Last polling error: {job['poll_error']}" if job.get("poll_error") else "")
                )
            await anyio.sleep(min(self._delay(0), max(0.0, deadline - time.monotonic()), 5.0))
        if job["state"] == "failed" and not job["fetched_at"]:
            raise ToolError(f"job {job_id} failed and has no results: {job['error']}")
        path = Path(job["result_path"])
        async with self._lock(job_id):
            if force or not path.exists():
                try:
                    job = await self._download(job, await self.jobs.parts(job_id), settle=False)
                except BackendError as exc:
                    raise ToolError(f"job {job_id}: {exc}") from None
        limit = self.settings.fetch_limit_chars
        with path.open(encoding="utf-8") as f:
            text = f.read(limit + 1)
        truncated = len(text) > limit
        if truncated:
            text = text[:limit] + f"\n\n[cut at {limit:,} characters; the whole result is in {path}]"
        return {
            "job_id": job_id,
            "state": job["state"],
            "request_counts": job["counts"],
            "cost_usd": job["cost_usd"],
            "text": text,
            "truncated": truncated,
            "result_path": str(path),
            "raw_path": job["raw_path"],
        }

    async def list_jobs(self, state: str, limit: int) -> dict[str, Any]:
        states: list[str] | None
        if state == "all":
            states = None
        elif state == "open":
            states = list(OPEN_STATES)
        elif state == "ended":
            states = list(ENDED_STATES)
        else:
            states = [state]
        jobs = await self.jobs.find(states, limit)
        tally = await self.jobs.tally()
        return {"jobs": [self.describe(j) for j in jobs], "shown": len(jobs), "by_state": tally}

    async def cancel(self, job_id: str) -> dict[str, Any]:
        job = await self.job_or_error(job_id)
        if job["state"] == "submitting":
            raise ToolError(f"job {job_id} is still being submitted; try again in a moment")
        if job["state"] not in ("in_progress", "canceling"):
            raise ToolError(f"job {job_id} has already ended ({job['state']}); there is nothing to cancel")
        backend = self.backend(job["backend"])
        async with self._lock(job_id):
            job = await self.job_or_error(job_id)  # the poller may have ended it meanwhile
            if job["state"] not in ("in_progress", "canceling"):
                raise ToolError(
                    f"job {job_id} has already ended ({job['state']}); there is nothing to cancel"
                )
            for part in await self.jobs.parts(job_id):
                if part["remote_id"] and part["processing_status"] != "ended":
                    try:
                        remote = await backend.cancel(part["remote_id"])
                    except BackendError as exc:
                        raise ToolError(f"cancelling job {job_id} failed: {exc}") from None
                    await self.jobs.update_part(
                        job_id,
                        part["part"],
                        processing_status=remote.processing_status,
                        counts=remote.request_counts,
                    )
            await self.jobs.update(job_id, state="canceling", next_poll_at=0)
        self._wake.set()
        await self.update_status_line()
        job = await self.poll_job(job_id)
        return self.describe(job, await self.jobs.parts(job_id))

    async def job_resource(self, job_id: str) -> dict[str, Any]:
        job = await self.job_or_error(job_id)
        out = self.describe(job, await self.jobs.parts(job_id))
        out["usage"] = await self.jobs.request_summary(job_id)
        out["first_requests"] = await self.jobs.requests(job_id, 100)
        return out

    async def update_status_line(self) -> None:
        tally = await self.jobs.tally()
        if not tally:
            await self.hub.set_status_line(None)
            return
        pending = sum(tally.get(s, 0) for s in OPEN_STATES)
        done = tally.get("succeeded", 0) + tally.get("partial", 0)
        failed = tally.get("failed", 0) + tally.get("expired", 0) + tally.get("canceled", 0)
        await self.hub.set_status_line(f"batch: {pending} pending, {done} done, {failed} failed")
