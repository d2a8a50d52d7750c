"""A writer whose transaction stays open: commits out of seq order, made on purpose."""

import threading

from django.db import connection, transaction

from orders import services
from orders.models import OrderEvent


class _RolledBack(Exception):
    pass


class OpenWriter:
    """Applies a provider status in its own thread and connection, then holds the transaction open
    until `commit()` or `rollback()`: its event's seq is allocated, but nobody else can see it yet."""

    def __init__(self, leg_id: int, provider_status: str) -> None:
        self.event: OrderEvent | None = None
        self.error: BaseException | None = None
        self._written = threading.Event()
        self._finish = threading.Event()
        self._commit = True
        self._thread = threading.Thread(target=self._run, args=(leg_id, provider_status), daemon=True)
        self._thread.start()
        assert self._written.wait(10), "the writer did not write"
        if self.error is not None:
            raise self.error

    @property
    def seq(self) -> int:
        assert self.event is not None
        return self.event.seq

    def _run(self, leg_id: int, provider_status: str) -> None:
        try:
            with transaction.atomic():
                self.event = services.leg_apply_status(
                    leg_id=leg_id, provider_status=provider_status, source="poll"
                )
                self._written.set()
                self._finish.wait(30)
                if not self._commit:
                    raise _RolledBack
        except _RolledBack:
            pass
        except BaseException as error:  # reported to the test by __init__
            self.error = error
        finally:
            self._written.set()
            connection.close()

    def commit(self) -> None:
        self._finish.set()
        self._thread.join(10)

    def rollback(self) -> None:
        self._commit = False
        self._finish.set()
        self._thread.join(10)
