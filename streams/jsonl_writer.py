"""JSONL files written by a child process: :class:`JsonlWriter`.

The child is ``python -m streams.jsonl_writer DIRECTORY``; it reads length-prefixed msgpack messages
on its standard input: ``["write", topic, lines]``, ``["call", topic, module, function, args]``
(the lines are what ``module.function(*args)`` returns, numpy arrays among the arguments carried as
their bytes), ``["flush"]`` or ``["close"]``. No pickle: the child calls only a function of a module
by name. This module imports only the standard library, msgspec and orjson, so that the child starts in a
twentieth of a second; a function's module is imported when it is first called. It also holds the
format of a record's line: :func:`lines`.
"""

from __future__ import annotations

import base64
import functools
import importlib
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import msgspec
import orjson

from .records import Record

__all__ = ["JsonlFiles", "JsonlWriter", "lines", "BINARY"]

_HEADER = struct.Struct("<Q")  # bytes of the message that follows
_ARRAY = 1  # msgpack extension code of a numpy array: the msgpack of (dtype string, shape, bytes) (_enc_hook)


#: Header marking a binary value (a model file), written as base64 in JSONL.
BINARY = {"content-type": "application/octet-stream"}


_KEYS: dict[bytes | None, bytes] = {}


def _line(r: Record) -> bytes:
    key = _KEYS.get(r.key)
    if key is None:
        key = orjson.dumps(r.key.decode("utf-8", "replace") if r.key is not None else None)
        if len(_KEYS) < 256:  # keys that repeat (sources, windows); cids do not
            _KEYS[r.key] = key
    if r.headers.get("content-type") == BINARY["content-type"]:
        value = orjson.dumps({"base64": base64.b64encode(r.value).decode()})
    else:
        value = r.value  # JSON written by a stage: embedded as is
    headers = b',"headers":' + orjson.dumps(r.headers) if r.headers else b""
    return b'{"key":' + key + b',"value":' + value + headers + b"}\n"


def lines(x: list[Record]) -> bytes:
    """The JSONL lines of records (one per record, as :class:`streams.memory.jsonl_sink` writes them),
    joined; a record without headers whose key was seen before is written in place (65 instead of
    186 ns a record)."""
    out: list[bytes] = []
    add = out.extend
    for r in x:
        key = _KEYS.get(r.key)
        if key is None or r.headers:
            out.append(_line(r))
        else:
            add((b'{"key":', key, b',"value":', r.value, b"}\n"))
    return b"".join(out)


def _enc_hook(obj):
    import numpy as np

    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return msgspec.msgpack.Ext(_ARRAY, msgspec.msgpack.encode((a.dtype.str, a.shape, a.tobytes())))
    raise TypeError(f"a JsonlWriter's call cannot carry {type(obj).__name__}")


def _ext_hook(code: int, data: memoryview):
    import numpy as np

    if code != _ARRAY:
        raise ValueError(f"unknown msgpack extension {code}")
    dtype, shape, raw = msgspec.msgpack.decode(data)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


_encode = msgspec.msgpack.Encoder(enc_hook=_enc_hook).encode
_decode = msgspec.msgpack.Decoder(ext_hook=_ext_hook).decode


def _call_message(topic: str, fn: Callable[[], bytes]) -> list:
    """The ``call`` message of ``fn``: a module-level function, or a :func:`functools.partial` of one
    with positional arguments (strings, numbers, bytes, lists, dicts, numpy arrays)."""
    func, args = (fn.func, fn.args) if isinstance(fn, functools.partial) and not fn.keywords else (fn, ())
    if getattr(func, "__qualname__", None) != getattr(func, "__name__", "") or not hasattr(func, "__module__"):
        raise TypeError(f"a JsonlWriter calls a module-level function (or a partial of one with positional "
                        f"arguments), not {fn!r}")
    return ["call", topic, func.__module__, func.__name__, list(args)]


class JsonlFiles:
    """Appends lines to ``<directory>/<topic>.jsonl`` in this process (each file opened on first use).

    :meth:`write` takes the lines as bytes, or a callable that returns them. The files are complete
    once :meth:`close` has returned; :meth:`flush` makes what was written so far visible to other
    readers (``tweetoscope dashboard --out``).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, object] = {}

    def write(self, topic: str, lines: bytes | Callable[[], bytes]) -> None:
        """Append ``lines`` (or what calling it returns) to ``<topic>.jsonl``."""
        fh = self.files.get(topic)
        if fh is None:
            fh = self.files[topic] = open(self.directory / f"{topic}.jsonl", "ab")
        fh.write(lines if isinstance(lines, bytes) else lines())

    def flush(self) -> None:
        for fh in self.files.values():
            fh.flush()

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()
        self.files.clear()


class JsonlWriter:
    """:class:`JsonlFiles` in a child process: lines written in the order they are given.

    :meth:`write` takes the lines as bytes, or a callable that returns them, called in the child (a
    module-level function or a :func:`functools.partial` of one: see the module's docstring): a batch's
    own formatting then runs on another core (bytes are better written by a
    :class:`JsonlFiles`: sending them costs more than writing them). A thread of this process sends
    the messages to the child, so that a write returns at once; when ``max_pending`` messages wait,
    the next write waits too (back-pressure: memory stays bounded). A child that fails (a full disk, a
    callable that raises) exits non-zero, and a later call here raises ``RuntimeError`` with its
    error. The files are complete once :meth:`close` has returned; :meth:`flush` makes what was
    written so far visible to other readers (``tweetoscope dashboard --out``).
    """

    def __init__(self, directory: str | Path, max_pending: int = 32) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # this process's imports
        self._process = subprocess.Popen([sys.executable, "-m", "streams.jsonl_writer", str(self.directory)],
                                         stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self._pending: queue.Queue = queue.Queue(max_pending)
        self._failed: BaseException | None = None
        self._closed = False
        self._sender = threading.Thread(target=self._send_all, name="jsonl-writer-sender", daemon=True)
        self._sender.start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    def write(self, topic: str, lines: bytes | Callable[[], bytes]) -> None:
        """Append ``lines`` (or what calling it returns, in the child) to ``<topic>.jsonl``."""
        self._put(["write", topic, lines] if isinstance(lines, bytes) else _call_message(topic, lines))

    def flush(self) -> None:
        """Have the child flush its files (asynchronously: it does so after the writes before)."""
        self._put(["flush"])

    def close(self) -> None:
        """Write what is left, close the files and wait for the child; raise if it failed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pending.put(["close"])
        self._sender.join()
        why = self._process.stderr.read().decode(errors="replace").strip()  # until it exits (written on error only)
        self._process.stderr.close()
        if self._process.wait() != 0 or self._failed is not None:
            raise RuntimeError(f"the JSONL writer of {self.directory} failed (exit code {self._process.returncode}): "
                               f"{why or repr(self._failed)}")

    def _put(self, message: list) -> None:
        if self._closed:
            raise RuntimeError(f"the JSONL writer of {self.directory} is closed")
        if self._failed is not None:  # the child ended: say why
            self.close()
        self._pending.put(message)

    def _send_all(self) -> None:
        """The sender thread: the queue's messages to the child, until ``close`` (sent too) or an error."""
        pipe = self._process.stdin
        while True:
            message = self._pending.get()
            try:
                data = _encode(message)
                pipe.write(_HEADER.pack(len(data)))
                pipe.write(data)
                pipe.flush()
                if message[0] == "close":
                    pipe.close()
                    return
            except BaseException as exc:  # the child ended (its error is read when raised)
                self._failed = exc
                while message[0] != "close":  # unblock writers waiting on a full queue
                    message = self._pending.get()
                try:
                    pipe.close()
                except OSError:
                    pass
                return


def _serve(directory: str) -> None:
    """The child: messages from standard input until ``close`` (or its end: the parent is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which then closes this
    files = JsonlFiles(directory)
    stdin = sys.stdin.buffer
    while True:
        header = stdin.read(_HEADER.size)
        if len(header) < _HEADER.size:  # the parent is gone: keep what was written
            break
        message = _decode(stdin.read(_HEADER.unpack(header)[0]))
        if message[0] == "write":
            files.write(message[1], message[2])
        elif message[0] == "call":
            _, topic, module, name, args = message
            files.write(topic, getattr(importlib.import_module(module), name)(*args))
        elif message[0] == "flush":
            files.flush()
        else:
            break
    files.close()


if __name__ == "__main__":
    try:
        _serve(sys.argv[1])
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
