"""The X display for window tests: a fresh Xvfb screen, finding and closing a window, and a screenshot.

`python3 tasks.py test` installs what these need: apt's xvfb, xdotool and x11-apps, and the libraries Qt links
against. Used by the desktop tests (tests/test_desktop.py) and the frozen build's double-click test.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CLEAN_ENV, until
from xcore.desktop import gui_problem

WINDOW_ENV = {
    **{k: v for k, v in CLEAN_ENV.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")},
    "QT_QPA_PLATFORM": "xcb",
}


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """display is a fresh Xvfb screen (1280x1024x24) on a display number Xvfb picks free."""
    xvfb = shutil.which("Xvfb")
    assert xvfb, "Xvfb is missing: `python3 tasks.py test` installs it (apt xvfb)"
    for tool, package in (("xdotool", "xdotool"), ("xwd", "x11-apps")):
        assert shutil.which(tool), f"{tool} is missing: `python3 tasks.py test` installs it (apt {package})"
    assert gui_problem({"DISPLAY": ":0"}) is None, "the desktop extra is missing: run `python3 tasks.py test`"
    ready_read, ready_write = os.pipe()
    process = subprocess.Popen(
        [xvfb, "-displayfd", str(ready_write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(ready_write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(ready_write)
    with os.fdopen(ready_read) as ready:
        number = ready.readline().strip()  # Xvfb writes its display number once it accepts connections
    assert number, f"Xvfb did not start (exit {process.poll()})"
    yield f":{number}"
    process.terminate()
    process.wait(timeout=10)


def _run(display: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env={**WINDOW_ENV, "DISPLAY": display}, capture_output=True, text=True, timeout=30)


def x11(display: str, *args: str) -> str:
    """x11 runs an X client on `display` and returns its output; a failure names the command and its stderr."""
    done = _run(display, *args)
    if done.returncode:
        raise AssertionError(f"{' '.join(args)} exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _search(display: str, *criteria: str) -> list[str]:
    """_search is `xdotool search --onlyvisible CRITERIA`: the ids of the windows found.

    xdotool lists the windows, then reads each one's name, and exits 1 with "BadWindow" when a window goes away in
    between (jordansissel/xdotool#511): Qt makes and drops windows while it starts. That is no answer: it raises
    an AssertionError, which `until` retries (and names if it is the last). Any other error fails at once.
    """
    search = _run(display, "xdotool", "search", "--onlyvisible", *criteria)
    error = search.stderr.strip()
    if search.returncode and error:
        if "BadWindow" in error:
            raise AssertionError(error)
        raise RuntimeError(f"xdotool search exited with {search.returncode}: {error}")
    return search.stdout.split()


def find_window(display: str, timeout: float = 30.0) -> tuple[int, int, int]:
    """find_window waits for the visible top-level window titled "xcore": (window id, width, height)."""

    def window() -> tuple[int, int, int] | None:
        found = _search(display, "--name", "^xcore$")
        if not found:
            return None
        assert len(found) == 1, f"expected one visible window titled xcore, found {found}"
        geometry = _run(display, "xdotool", "getwindowgeometry", "--shell", found[0])
        assert geometry.returncode == 0, geometry.stderr.strip()  # it went away between the two commands
        fields = dict(line.split("=", 1) for line in geometry.stdout.split())
        return int(found[0]), int(fields["WIDTH"]), int(fields["HEIGHT"])

    return until(window, f"a visible window titled xcore on {display}", timeout, interval=0.1)


def visible_windows(display: str, timeout: float = 30.0) -> set[int]:
    """visible_windows is every visible window's id, a menu's popup included."""
    # Wrapped in a list, an empty answer (no window) is still an answer: until waits only for a BadWindow to pass.
    listed = until(lambda: [_search(display, "--name", "")], f"the windows on {display}", timeout, interval=0.1)
    return {int(window) for window in listed[0]}


class _ClientMessageData(ctypes.Union):
    _fields_ = [("b", ctypes.c_char * 20), ("s", ctypes.c_short * 10), ("l", ctypes.c_long * 5)]


class _XClientMessageEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("serial", ctypes.c_ulong),
        ("send_event", ctypes.c_int),
        ("display", ctypes.c_void_p),
        ("window", ctypes.c_ulong),
        ("message_type", ctypes.c_ulong),
        ("format", ctypes.c_int),
        ("data", _ClientMessageData),
    ]


class _XEvent(ctypes.Union):
    _fields_ = [("xclient", _XClientMessageEvent), ("pad", ctypes.c_long * 24)]


def close_window(display: str, window: int) -> None:
    """close_window asks the window to close as a window manager's close button does (WM_DELETE_WINDOW)."""
    xlib = ctypes.CDLL("libX11.so.6")
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    xlib.XInternAtom.restype = ctypes.c_ulong
    xlib.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    xlib.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    xlib.XFlush.argtypes = [ctypes.c_void_p]
    xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    connection = xlib.XOpenDisplay(display.encode())
    assert connection, f"cannot open display {display}"
    try:
        event = _XEvent()
        event.xclient.type = 33  # ClientMessage
        event.xclient.window = window
        event.xclient.message_type = xlib.XInternAtom(connection, b"WM_PROTOCOLS", False)
        event.xclient.format = 32
        event.xclient.data.l[0] = xlib.XInternAtom(connection, b"WM_DELETE_WINDOW", False)
        assert xlib.XSendEvent(connection, window, False, 0, ctypes.byref(event)), "XSendEvent failed"
        xlib.XFlush(connection)
    finally:
        xlib.XCloseDisplay(connection)


def screenshot(display: str, path: Path) -> set[tuple[int, int, int]]:
    """screenshot saves the whole screen as a PNG (xwd, converted here) and returns the colours it sampled."""
    xwd = subprocess.run(
        ["xwd", "-root", "-silent", "-display", display], capture_output=True, timeout=30, check=True
    ).stdout
    header = struct.unpack(">25I", xwd[:100])
    header_size, pixmap_format, depth, width, height = header[0], header[2], header[3], header[4], header[5]
    byte_order, bits_per_pixel, bytes_per_line, ncolors = header[7], header[11], header[12], header[19]
    step = bits_per_pixel // 8
    assert (pixmap_format, depth, step) in ((2, 24, 3), (2, 24, 4)), f"unexpected xwd format {header[:12]}"
    pixels = memoryview(xwd)[header_size + 12 * ncolors :]
    r, g, b = (2, 1, 0) if byte_order == 0 else (step - 3, step - 2, step - 1)  # LSBFirst: B G R (x)
    rows = bytearray()
    colours: set[tuple[int, int, int]] = set()
    for y in range(height):
        line = pixels[y * bytes_per_line : y * bytes_per_line + width * step]
        rgb = bytearray(width * 3)
        rgb[0::3], rgb[1::3], rgb[2::3] = line[r::step], line[g::step], line[b::step]
        rows += b"\x00" + rgb
        if y % 16 == 0:
            colours.update(zip(rgb[0::48], rgb[1::48], rgb[2::48], strict=True))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
        + chunk(b"IEND", b"")
    )
    return colours
