"""The REST handlers under ``/remotecell/api/``: each asks the runtime one thing and answers JSON."""

from __future__ import annotations

import json
import time
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from remotecell_runtime.protocol.message import Message
from remotecell_runtime.protocol.messages.apps import (
    AppLogsMsg,
    AppLogsReply,
    ScheduleListMsg,
    SchedulePauseMsg,
    ScheduleRef,
    ScheduleResumeMsg,
    ScheduleRunMsg,
)
from remotecell_runtime.protocol.messages.images import ImageListMsg
from remotecell_runtime.protocol.messages.jobs import (
    CallCancelMsg,
    CallCancelReply,
    CallLogsMsg,
    CallLogsReply,
    CallsRecentMsg,
    CallStatusMsg,
)
from remotecell_runtime.protocol.messages.session import StatusMsg
from remotecell_runtime.protocol.messages.stores import KvListMsg
from tornado import web

from .. import exceptions
from .link import NoRuntime, RuntimeLink

CALL_ID = r"fc-[0-9a-f]+|fg-[0-9a-f]+\.[0-9]+"  # a spawned call, or one input of a spawn_map
DEFAULT_LIMIT = 50
# The runtime's refusals, as HTTP statuses: anything else it reports is a 502.
STATUS_OF_ERROR: dict[type[Exception], int] = {
    exceptions.NotFoundError: 404, exceptions.OutputExpiredError: 410, exceptions.InvalidError: 400,
}


class RuntimeHandler(APIHandler):
    """Asks the runtime through the server's one link; errors become JSON with a ``message``."""

    @property
    def link(self) -> RuntimeLink:
        return self.settings["remotecell_link"]

    async def ask(self, msg: Message) -> dict[str, Any]:
        """The runtime's answer to ``msg``, as the JSON the panel reads."""
        try:
            return await self.link.request(msg)
        except NoRuntime as exc:
            raise web.HTTPError(503, str(exc)) from exc
        except exceptions.Error as exc:
            raise web.HTTPError(STATUS_OF_ERROR.get(type(exc), 502), str(exc)) from exc

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """JSON ``{"message": ...}`` as APIHandler's, without its doubling of the ``%`` in messages."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(exc, web.HTTPError) or not exc.log_message:
            super().write_error(status_code, **kwargs)
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": exc.log_message % exc.args}))

    def reply(self, body: dict[str, Any]) -> None:
        self.set_header("Cache-Control", "no-store")  # the panel polls: always the current state
        self.finish(json.dumps(body))


class StatusHandler(RuntimeHandler):
    @web.authenticated
    async def get(self) -> None:
        status = await self.ask(StatusMsg())
        self.reply(dict(status, address=self.link.address))


class CallsHandler(RuntimeHandler):
    @web.authenticated
    async def get(self) -> None:
        raw = self.get_query_argument("limit", str(DEFAULT_LIMIT))
        if not raw.isdigit() or int(raw) < 1:
            raise web.HTTPError(400, f"limit={raw!r}: give a positive number of calls")
        self.reply(await self.ask(CallsRecentMsg(limit=int(raw), since=self._since())))

    def _since(self) -> float | None:
        """``since_s=N``: only the calls made in the last N seconds (the panel's Inbox: the last day)."""
        raw = self.get_query_argument("since_s", None)
        if raw is None:
            return None
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < float("inf"):
            raise web.HTTPError(400, f"since_s={raw!r}: give how many seconds back to look, a number >= 0")
        return time.time() - seconds


class CallHandler(RuntimeHandler):
    @web.authenticated
    async def get(self, call_id: str) -> None:
        self.reply(await self.ask(CallStatusMsg(call=call_id)))


class CallLogsHandler(RuntimeHandler):
    @web.authenticated
    async def get(self, call_id: str) -> None:
        logs = CallLogsReply.from_wire(await self.ask(CallLogsMsg(call=call_id)))
        self.reply({"id": call_id, "text": logs.text})


class CallCancelHandler(RuntimeHandler):
    @web.authenticated
    async def post(self, call_id: str) -> None:
        await self.ask(CallStatusMsg(call=call_id))  # an unknown id is a 404, not a quiet no-op
        done = CallCancelReply.from_wire(await self.ask(CallCancelMsg(calls=[call_id])))
        self.reply({"id": call_id, "cancelled": bool(done.cancelled)})


class StoresHandler(RuntimeHandler):
    @web.authenticated
    async def get(self) -> None:
        self.reply(await self.ask(KvListMsg()))


class ImagesHandler(RuntimeHandler):
    @web.authenticated
    async def get(self) -> None:
        self.reply(await self.ask(ImageListMsg()))


class FunctionLogsHandler(RuntimeHandler):
    """What one function of an app printed after entry ``after`` (the app's log cursor): the panel follows it."""

    @web.authenticated
    async def get(self, app_name: str, function: str) -> None:
        raw = self.get_query_argument("after", "0")
        if not raw.isdigit():
            raise web.HTTPError(400, f"after={raw!r}: give the 'next' of the previous answer, a number >= 0")
        logs = AppLogsReply.from_wire(await self.ask(AppLogsMsg(app=app_name, after=int(raw))))
        text = "".join(entry[1] for entry in logs.entries if entry[0] == function)
        self.reply({"app": app_name, "function": function, "text": text, "next": logs.next, "live": logs.live})


class SchedulesHandler(RuntimeHandler):
    @web.authenticated
    async def get(self) -> None:
        self.reply(await self.ask(ScheduleListMsg()))


# The routes' actions (see ``ROUTES``): each its request.
SCHEDULE_ACTIONS: dict[str, type[ScheduleRef]] = {"pause": SchedulePauseMsg, "resume": ScheduleResumeMsg,
                                                  "run": ScheduleRunMsg}


class ScheduleActionHandler(RuntimeHandler):
    """Pause, resume or run now a deployed function's schedule; the answer is its state after that."""

    @web.authenticated
    async def post(self, app_name: str, function: str, action: str) -> None:
        self.reply(await self.ask(SCHEDULE_ACTIONS[action](app=app_name, name=function)))


class BadCallIdHandler(RuntimeHandler):
    """Any other path under calls/: say what an id looks like instead of a bare 404."""

    @web.authenticated
    def get(self, rest: str) -> None:
        raise web.HTTPError(400, f"{rest.split('/')[0]!r} is not a call id: ids look like 'fc-...' or 'fg-....N'")

    post = get


ROUTES: list[tuple[str, type[RuntimeHandler]]] = [
    (r"status", StatusHandler),
    (r"calls", CallsHandler),
    (rf"calls/({CALL_ID})", CallHandler),
    (rf"calls/({CALL_ID})/logs", CallLogsHandler),
    (rf"calls/({CALL_ID})/cancel", CallCancelHandler),
    (r"calls/(.+)", BadCallIdHandler),
    (r"stores", StoresHandler),
    (r"images", ImagesHandler),
    (r"functions/([^/]+)/([^/]+)/logs", FunctionLogsHandler),
    (r"schedules", SchedulesHandler),
    (r"schedules/([^/]+)/([^/]+)/(pause|resume|run)", ScheduleActionHandler),
]


def setup_handlers(web_app: Any) -> None:
    """Serve the API under ``{base_url}remotecell/api/``, with one runtime link for the whole server."""
    web_app.settings["remotecell_link"] = RuntimeLink()
    base = url_path_join(web_app.settings["base_url"], "remotecell", "api")
    web_app.add_handlers(".*$", [(url_path_join(base, path) + "/?$", handler) for path, handler in ROUTES])
