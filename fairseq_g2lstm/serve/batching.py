"""Dynamic batching: sentences of requests that arrive close together go through the model
as one batch.

A beam search over B sentences costs far less than B searches of one (the matrix
products are B times wider for nearly the same number of Python steps), so a server that
batches serves many more sentences per second under concurrent load. The batcher:

* queues single sentences (a request's texts are queued together and awaited together),
  each with a *key*: only sentences with the same key (same beam, n-best, gate settings)
  share a batch;
* lets the first sentence wait up to ``max_wait_s`` for company, then takes, in arrival
  order, the sentences of the oldest one's key up to ``max_sentences`` sentences and
  ``max_tokens`` source tokens (a single longer sentence still goes alone);
* runs the batch in one worker thread, off the event loop (the model is not shared
  between threads), while new requests queue up for the next batch;
* refuses work beyond ``max_queue`` waiting sentences with :class:`QueueFull`, so that
  an overload is answered at once instead of timing out (and a request larger than the
  whole queue with :class:`TooLarge`: retrying cannot help it); a request that gives up
  takes its sentences out of the queue at once;
* when a batch fails, runs its sentences one by one, so that one bad sentence fails only
  its own request; whatever else goes wrong fails the sentences at hand, never the
  worker (:attr:`DynamicBatcher.healthy` says whether it runs).

``max_sentences=1`` turns batching off (for comparisons).
"""
import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Deque, Hashable, List, Optional, Sequence

logger = logging.getLogger(__name__)

# run(key, payloads) -> one result per payload, in order
RunBatch = Callable[[Hashable, List[Any]], List[Any]]


class QueueFull(Exception):
    """More sentences are waiting than the batcher accepts."""


class TooLarge(ValueError):
    """One request holds more sentences than the whole queue: it can never be accepted."""


@dataclass
class _Item:
    key: Hashable
    payload: Any
    tokens: int
    future: asyncio.Future


class DynamicBatcher:
    """Batches the sentences given to :meth:`submit` for ``run``; see the module docstring."""

    def __init__(self, run: RunBatch, *, max_sentences: int = 32, max_tokens: int = 4096, max_wait_s: float = 0.005,
                 max_queue: int = 1024, name: str = "model"):
        self.run, self.name = run, name
        self.max_sentences, self.max_tokens, self.max_wait_s, self.max_queue = (
            max_sentences, max_tokens, max_wait_s, max_queue)
        self._pending: Deque[_Item] = deque()
        self._arrived: Optional[asyncio.Event] = None
        self._worker: Optional[asyncio.Task] = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self.batches_run = 0  # for /v1/models and the tests
        self.sentences_run = 0

    @property
    def waiting(self) -> int:
        return len(self._pending)

    @property
    def healthy(self) -> bool:
        """Whether the worker is running (for ``/health``)."""
        return self._worker is not None and not self._worker.done()

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._arrived = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Stop the worker and, once its current batch is done, its thread; sentences
        still waiting fail. The event loop runs on meanwhile (other models' batchers,
        the requests being drained)."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        while self._pending:
            self._settle(self._pending.popleft(), error=RuntimeError(f"{self.name} stopped"))
        await asyncio.get_running_loop().run_in_executor(None, lambda: self._executor.shutdown(wait=True))

    async def call(self, fn: Callable[..., Any], *args) -> Any:
        """Run ``fn(*args)`` in the model's thread, between batches (loading, gates)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def submit(self, key: Hashable, payloads: Sequence[Any], tokens: Sequence[int]) -> List[Any]:
        """Queue ``payloads`` (with their source lengths ``tokens``) under ``key`` and
        wait for their results, in order. Raises :class:`QueueFull` without queueing
        anything when they do not fit (:class:`TooLarge` when they never will), and the
        run's exception for a sentence that fails alone. Cancelling the caller (a
        timeout) takes its sentences that have not started out of the queue."""
        if len(payloads) > self.max_queue:
            raise TooLarge(f"{len(payloads)} sentences in one request; the queue of {self.name} holds "
                           f"{self.max_queue} (--max-queue)")
        if len(self._pending) + len(payloads) > self.max_queue:
            raise QueueFull(f"{len(self._pending)} sentences are waiting for {self.name}")
        loop = asyncio.get_running_loop()
        items = [_Item(key, payload, size, loop.create_future()) for payload, size in zip(payloads, tokens, strict=True)]
        self._pending.extend(items)
        self._arrived.set()
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        except asyncio.CancelledError:
            mine = {id(item) for item in items}
            self._pending = deque(item for item in self._pending if id(item) not in mine)
            raise

    async def _work(self) -> None:
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            if self.max_wait_s > 0 and len(self._pending) < self.max_sentences:
                await asyncio.sleep(self.max_wait_s)  # let the sentences of concurrent requests join
            batch: List[_Item] = []
            try:
                batch = self._take()
                if batch:
                    await self._run(batch)
            except Exception as error:  # a bug here must fail requests, not stop the worker for good
                failed = batch or list(self._pending)
                logger.exception("the batcher of %s failed; failing its %d sentences", self.name, len(failed))
                for item in failed:
                    self._settle(item, error=error)
                if not batch:
                    self._pending.clear()

    def _take(self) -> List[_Item]:
        """The next batch: the oldest live sentence's key, in arrival order, within the bounds."""
        while self._pending and self._pending[0].future.done():  # its request was cancelled or timed out
            self._pending.popleft()
        if not self._pending:
            return []
        key, batch, tokens, kept = self._pending[0].key, [], 0, deque()
        while self._pending:
            item = self._pending.popleft()
            if item.future.done():
                continue
            fits = len(batch) < self.max_sentences and (not batch or tokens + item.tokens <= self.max_tokens)
            if item.key == key and fits:
                batch.append(item)
                tokens += item.tokens
            else:
                kept.append(item)
                if not fits and item.key == key:
                    break
        kept.extend(self._pending)
        self._pending = kept
        return batch

    async def _run(self, batch: List[_Item]) -> None:
        key = batch[0].key
        try:
            results = await self.call(self.run, key, [item.payload for item in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)} sentences")
        except Exception as error:
            if len(batch) == 1:
                self._settle(batch[0], error=error)
                return
            logger.warning("a batch of %d sentences failed (%s); running them one by one", len(batch),
                           type(error).__name__)
            for item in batch:
                await self._run([item])
            return
        self.batches_run += 1
        self.sentences_run += len(batch)
        for item, result in zip(batch, results, strict=True):
            self._settle(item, result=result)

    @staticmethod
    def _settle(item: _Item, result: Any = None, error: Optional[BaseException] = None) -> None:
        if item.future.done():  # the request went away meanwhile
            return
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(result)
