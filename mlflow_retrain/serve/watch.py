"""New data in a folder: watch `data.path` and queue a normal cycle when files appear or change.

A filesystem event is only a hint to look again: the folder's listing (path -> size, mtime) is
compared with the last one the queue recorded, and the difference becomes one `new_data` event,
written in the same transaction as the new listing. So files that landed while `serve` was down
are found by the first look after a restart, a file written in many chunks settles into one event
(the look waits `settle` seconds after the last hint), and the native observer (inotify) and the
polling one (network filesystems, no inotify watches left) behave the same.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from mlflow_retrain.serve.events import new_data_action
from mlflow_retrain.serve.queue import EventQueue

log = logging.getLogger(__name__)

Listing = dict[str, tuple[int, int]]


def hidden(folder: Path, path: str | bytes) -> bool:
    """Hidden files and folders are not data: editors' and writers' temp files, a state folder."""
    try:
        relative = Path(path if isinstance(path, str) else path.decode()).relative_to(folder)
    except ValueError:
        return True
    return any(part.startswith(".") for part in relative.parts)


def scan(folder: Path) -> Listing:
    """Every data file under `folder`, hidden ones skipped."""
    found: Listing = {}
    for path in folder.rglob("*"):
        if hidden(folder, str(path)) or not path.is_file():
            continue
        relative = path.relative_to(folder)
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed while listing
            continue
        found[relative.as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


def changed(before: Listing | None, after: Listing) -> list[str]:
    """Files new or modified since `before`; on the first look ever (None) nothing: data already
    there when serving starts is not new."""
    if before is None:
        return []
    return sorted(path for path, stamp in after.items() if before.get(path) != stamp)


class FolderWatch:
    """Looks at the folder on start, then again `settle` seconds after the last filesystem event."""

    def __init__(self, folder: Path, queue: EventQueue, model: str, *, mode: str = "auto", settle: float = 1.0,
                 poll: float = 5.0):
        self.folder, self.queue, self.model = folder.resolve(), queue, model
        self.mode, self.settle, self.poll = mode, settle, poll
        self.observer = None
        self.kind = "off"
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def look(self) -> list[str]:
        """Compare the folder with the recorded listing; queue one event for what changed."""
        with self._lock:
            after = scan(self.folder)
            files = changed(self.queue.listing(), after)
            action = new_data_action(files) if files else None
            self.queue.record_listing(after, (self.model, action.reason, action) if action else None)
        if files:
            log.info("new data in %s: %s", self.folder, action.reason)
        return files

    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        watch = self

        class Hint(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.event_type in ("created", "modified", "moved", "closed") and not hidden(
                        watch.folder, event.dest_path or event.src_path):
                    watch.hint()

        self.look()
        candidates = [("native", Observer)] if self.mode == "auto" else []
        candidates.append(("polling", lambda: PollingObserver(timeout=self.poll)))
        for kind, make in candidates:
            observer = make()
            try:
                observer.schedule(Hint(), str(self.folder), recursive=True)
                observer.start()
            except OSError as exc:  # e.g. inotify watch limit reached
                log.warning("cannot watch %s with the %s observer (%s): polling instead", self.folder, kind, exc)
                continue
            self.observer, self.kind = observer, kind
            return

    def hint(self) -> None:
        """Something moved in the folder: look again once it has been quiet for `settle` seconds."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.settle, self._look_logged)
            self._timer.daemon = True
            self._timer.start()

    def _look_logged(self) -> None:
        try:
            self.look()
        except Exception:  # a watcher thread must not die silently; the next hint looks again
            log.exception("looking at %s failed", self.folder)

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(5)
