"""SMTP catcher of the Mailpit stand-in (docker/offline/build-images): keeps every email it receives.

    mailcatcher            SMTP on :1025 (aiosmtpd), HTTP on :8025
    mailcatcher readyz     exit 0 when the HTTP side answers (the image's HEALTHCHECK, as `mailpit readyz`)

Not Mailpit: it answers the part of Mailpit's HTTP API that a smoke test reads, with Mailpit's field names.
  GET    /api/v1/messages          newest first; ?start=N&limit=N; {"total", "count", "messages": [...]}
  GET    /api/v1/message/ID        one message, with Text and HTML
  GET    /api/v1/message/ID/raw    its source, as received
  DELETE /api/v1/messages          deletes the messages in {"IDs": [...]}, or every message without a body
  GET    /livez, /readyz           200
  GET    /                         a plain HTML list
Messages live in memory (the newest MAX_MESSAGES), as with Mailpit without a --database.
"""

import email.policy
import email.utils
import html
import itertools
import json
import logging
import os
import signal
import sys
import threading
import urllib.request
from datetime import UTC, datetime
from email.message import EmailMessage
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller

SMTP_PORT = int(os.environ.get("MP_SMTP_PORT", "1025"))
HTTP_PORT = int(os.environ.get("MP_UI_PORT", "8025"))
MAX_MESSAGES = int(os.environ.get("MP_MAX_MESSAGES", "500"))
SNIPPET_LENGTH = 250
# The fields of each message in Mailpit's list; its full view adds ReturnPath, Date, Text and HTML.
SUMMARY_KEYS = ("ID", "MessageID", "Read", "From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "Created", "Tags")
SUMMARY_KEYS += ("Size", "Attachments", "Snippet")

logger = logging.getLogger("mailcatcher")


def addresses(message: EmailMessage, header: str) -> list[dict[str, str]]:
    return [
        {"Name": name, "Address": address}
        for name, address in email.utils.getaddresses([str(value) for value in message.get_all(header, [])])
        if address
    ]


def body_text(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    return part.get_content() if part is not None else ""


class Mailbox:
    """The received messages, newest last; shared by the SMTP thread and the HTTP threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[dict] = []
        self._ids = itertools.count(1)

    def add(self, raw: bytes, mail_from: str, rcpt_tos: list[str]) -> dict:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        text = body_text(message, "plain")
        recipients = addresses(message, "To") or [{"Name": "", "Address": rcpt} for rcpt in rcpt_tos]
        with self._lock:
            entry = {
                "ID": f"{next(self._ids):08d}",
                "MessageID": (message.get("Message-ID") or "").strip().strip("<>"),
                "Read": False,
                "From": (addresses(message, "From") or [{"Name": "", "Address": mail_from}])[0],
                "To": recipients,
                "Cc": addresses(message, "Cc"),
                "Bcc": [],
                "ReplyTo": addresses(message, "Reply-To"),
                "ReturnPath": mail_from,
                "Subject": str(message.get("Subject", "")),
                "Date": str(message.get("Date", "")),
                "Created": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "Tags": [],
                "Size": len(raw),
                "Attachments": sum(1 for _ in message.iter_attachments()),
                "Snippet": " ".join(text.split())[:SNIPPET_LENGTH],
                "Text": text,
                "HTML": body_text(message, "html"),
                "_raw": raw,
            }
            self._messages.append(entry)
            del self._messages[:-MAX_MESSAGES]
        return entry

    def listing(self, start: int, limit: int) -> dict:
        with self._lock:
            newest_first = list(reversed(self._messages))
        page = newest_first[start : start + limit]
        return {
            "total": len(newest_first),
            "unread": sum(1 for entry in newest_first if not entry["Read"]),
            "count": len(page),
            "messages_count": len(newest_first),
            "start": start,
            "tags": [],
            "messages": [{key: entry[key] for key in SUMMARY_KEYS} for entry in page],
        }

    def get(self, message_id: str) -> dict | None:
        with self._lock:
            return next((entry for entry in self._messages if entry["ID"] == message_id), None)

    def delete(self, message_ids: list[str] | None) -> None:
        with self._lock:
            if message_ids is None:
                self._messages.clear()
            else:
                self._messages[:] = [entry for entry in self._messages if entry["ID"] not in message_ids]


class SMTPHandler:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_DATA(self, server, session, envelope) -> str:
        entry = self.mailbox.add(envelope.content, envelope.mail_from, list(envelope.rcpt_tos))
        recipients = [to["Address"] for to in entry["To"]]
        logger.info("caught %s: %r to %s", entry["ID"], entry["Subject"], recipients)
        return "250 Message accepted for delivery"


def make_http_handler(mailbox: Mailbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mailcatcher"

        def send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def send_json(self, payload: object, status: int = HTTPStatus.OK) -> None:
            self.send(status, json.dumps(payload).encode(), "application/json")

        def not_found(self) -> None:
            self.send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            parts = [part for part in url.path.split("/") if part]
            query = parse_qs(url.query)
            if url.path in ("/livez", "/readyz"):
                self.send(HTTPStatus.OK, b"ok\n", "text/plain")
            elif parts == ["api", "v1", "messages"]:
                start = int(query.get("start", ["0"])[0])
                limit = int(query.get("limit", ["50"])[0])
                self.send_json(mailbox.listing(start, limit))
            elif parts[:3] == ["api", "v1", "message"] and len(parts) in (4, 5):
                entry = mailbox.get(parts[3])
                if entry is None:
                    self.not_found()
                elif len(parts) == 5 and parts[4] == "raw":
                    self.send(HTTPStatus.OK, entry["_raw"], "text/plain; charset=utf-8")
                elif len(parts) == 4:
                    entry["Read"] = True
                    self.send_json({key: value for key, value in entry.items() if not key.startswith("_")})
                else:
                    self.not_found()
            elif url.path == "/":
                rows = "".join(
                    "<li>{} {} &rarr; {}: {}</li>".format(
                        *map(
                            html.escape,
                            (
                                m["Created"],
                                m["From"]["Address"],
                                ", ".join(to["Address"] for to in m["To"]),
                                m["Subject"],
                            ),
                        )
                    )
                    for m in mailbox.listing(0, MAX_MESSAGES)["messages"]
                )
                page = f"<!DOCTYPE html><title>Mailpit stand-in</title><h1>Caught emails</h1><ul>{rows}</ul>"
                self.send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
            else:
                self.not_found()

        def do_DELETE(self) -> None:
            if urlsplit(self.path).path != "/api/v1/messages":
                self.not_found()
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            mailbox.delete(body.get("IDs") or None)
            self.send(HTTPStatus.OK, b"ok", "text/plain")

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("%s %s", self.address_string(), format % args)

    return Handler


def readyz() -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/readyz", timeout=3) as response:
            return 0 if response.status == HTTPStatus.OK else 1
    except OSError as error:
        sys.stderr.write(f"not ready: {error}\n")
        return 1


def serve() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO
    mailbox = Mailbox()
    smtp = Controller(SMTPHandler(mailbox), hostname="0.0.0.0", port=SMTP_PORT)
    smtp.start()
    web = ThreadingHTTPServer(("0.0.0.0", HTTP_PORT), make_http_handler(mailbox))
    web.daemon_threads = True
    # PID 1 gets docker stop's SIGTERM: stop serving instead of waiting for the SIGKILL.
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=web.shutdown).start())
    logger.info("SMTP on :%d, HTTP API on :%d (Mailpit stand-in)", SMTP_PORT, HTTP_PORT)
    try:
        web.serve_forever()
    finally:
        smtp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(readyz() if sys.argv[1:] == ["readyz"] else serve())
