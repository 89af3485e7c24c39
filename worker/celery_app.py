"""The worker's Celery application: configuration, task registration, heartbeat."""

from __future__ import annotations

import logging
import multiprocessing

import redis
from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from caimx.jobs import DEFAULT_PREFIX
from caimx.queue import Heartbeat, make_celery
from caimx.settings import Settings, get_settings
from worker.tasks import register_tasks

log = logging.getLogger(__name__)


def allow_child_processes(**_: object) -> None:
    """Let a prefork child start processes of its own: lift its daemon mark, which forbids
    them, and hold its authentication key as the standard library's type (Celery's process
    library sets its own, which the standard library refuses to hand to a new process).

    The engine fits the calcium traces of long movies in a few processes (OASIS holds the
    interpreter lock), forked from a fork server; the engine shuts them down after each movie,
    each exits as soon as the process that started it has ended, and the fork server then ends
    too, so a child that is recycled or killed leaves none behind. Without this the fits run in the
    child alone (``model.inference.deconvolve.fit_processes``).
    """
    process = multiprocessing.current_process()
    process.daemon = False
    process._config["authkey"] = multiprocessing.process.AuthenticationString(
        bytes(process.authkey))


worker_process_init.connect(allow_child_processes, weak=False)


def create_celery(settings: Settings | None = None, *, prefix: str = DEFAULT_PREFIX) -> Celery:
    """A Celery app that consumes queue ``gpu`` and beats ``{prefix}:worker:<name>`` in Redis."""
    settings = settings or get_settings()
    app = make_celery(settings, main="caimx.worker")
    register_tasks(app, settings=settings, prefix=prefix)
    beats: list[Heartbeat] = []

    def on_ready(sender, **_: object) -> None:
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        beat = Heartbeat(client, sender.hostname, prefix=prefix)
        beat.start()
        beats.append(beat)
        log.info("worker %s ready; models from %s", sender.hostname, settings.models_dir)

    def on_shutdown(**_: object) -> None:
        while beats:
            beats.pop().stop()

    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
    return app
