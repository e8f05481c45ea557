#!/usr/bin/env python3
"""A small RFB (VNC, RFC 6143) client for vtool's display tests and benchmark.

Speaks protocol 3.8 (3.3 and 3.7 too), security None and VNC authentication (DES via
python3-cryptography), raw encoding plus the DesktopSize pseudo-encoding, in a 32-bit
0x00RRGGBB pixel format. Counts the bytes the server sends. Saves PNGs with zlib only.

Command line:
  rfbclient.py snap ADDR OUT.png [--password P] [--timeout S]
      ADDR is HOST:DISPLAY (":19", "127.0.0.1:19"), HOST::PORT or unix:PATH
"""
import argparse
import socket
import struct
import sys
import time
import zlib

ENC_RAW = 0
ENC_DESKTOP_SIZE = -223


class RFBError(Exception):
    pass


def connect_addr(addr, timeout=10.0):
    if addr.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(addr[5:])
        return s
    if "::" in addr:
        host, port = addr.rsplit("::", 1)
        port = int(port)
    else:
        host, disp = addr.rsplit(":", 1)
        port = 5900 + int(disp)
    s = socket.create_connection((host or "127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def vnc_des_response(password, challenge):
    """VNC authentication: DES-encrypt the challenge with the password (8 bytes, NUL
    padded, each byte's bits reversed)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, modes
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
    key = password.encode("latin-1")[:8].ljust(8, b"\0")
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in key)
    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # 3 equal keys = DES
    return enc.update(challenge) + enc.finalize()


class RFB:
    def __init__(self, addr, password=None, shared=True, timeout=10.0, encodings=None):
        self.sock = connect_addr(addr, timeout)
        self.rx_bytes = 0
        self.width = self.height = 0
        self.fb = bytearray()
        self.name = ""
        self.updates = 0
        self.resizes = []
        self._handshake(password, shared)
        self.set_pixel_format()
        self.set_encodings(encodings or [ENC_RAW, ENC_DESKTOP_SIZE])

    # --- wire ---------------------------------------------------------------------
    def _recv(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise RFBError("connection closed by the server")
            buf += chunk
        self.rx_bytes += n
        return bytes(buf)

    def _send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # --- handshake ----------------------------------------------------------------
    def _handshake(self, password, shared):
        version = self._recv(12)
        if not version.startswith(b"RFB 003."):
            raise RFBError(f"not an RFB server: {version!r}")
        minor = int(version[8:11])
        minor = 8 if minor >= 8 else (7 if minor == 7 else 3)
        self._send(b"RFB 003.%03d\n" % minor)
        if minor == 3:
            (sec,) = struct.unpack(">I", self._recv(4))
            if sec == 0:
                self._fail()
        else:
            (n,) = struct.unpack(">B", self._recv(1))
            if n == 0:
                self._fail()
            types = list(self._recv(n))
            if 1 in types and password is None:
                sec = 1
            elif 2 in types:
                sec = 2
            elif 1 in types:
                sec = 1
            else:
                raise RFBError(f"no supported security type in {types}")
            self._send(bytes([sec]))
        self.security = sec
        if sec == 2:
            if password is None:
                raise RFBError("the server wants a password")
            challenge = self._recv(16)
            self._send(vnc_des_response(password, challenge))
        if sec == 2 or minor == 8:
            (result,) = struct.unpack(">I", self._recv(4))
            if result != 0:
                reason = ""
                if minor == 8:
                    (ln,) = struct.unpack(">I", self._recv(4))
                    reason = self._recv(min(ln, 4096)).decode("latin-1")
                raise RFBError(f"authentication failed {reason}".strip())
        self._send(bytes([1 if shared else 0]))
        w, h = struct.unpack(">HH", self._recv(4))
        self._recv(16)  # server pixel format
        (ln,) = struct.unpack(">I", self._recv(4))
        self.name = self._recv(ln).decode("utf-8", "replace")
        self._resize(w, h)

    def _fail(self):
        (ln,) = struct.unpack(">I", self._recv(4))
        raise RFBError("server refused: " + self._recv(min(ln, 4096)).decode("latin-1"))

    def _resize(self, w, h):
        self.width, self.height = w, h
        self.fb = bytearray(w * h * 4)

    # --- client messages ----------------------------------------------------------
    def set_pixel_format(self):
        # 32 bpp, depth 24, little endian, true colour, 0x00RRGGBB
        pf = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
        self._send(struct.pack(">B3x", 0) + pf)

    def set_encodings(self, encs):
        self._send(struct.pack(">BxH", 2, len(encs)) + b"".join(struct.pack(">i", e) for e in encs))

    def request(self, incremental=True, x=0, y=0, w=None, h=None):
        w = self.width if w is None else w
        h = self.height if h is None else h
        self._send(struct.pack(">BBHHHH", 3, 1 if incremental else 0, x, y, w, h))

    def key(self, keysym, down):
        self._send(struct.pack(">BBxxI", 4, 1 if down else 0, keysym))

    def tap(self, keysym):
        self.key(keysym, True)
        self.key(keysym, False)

    def pointer(self, x, y, mask=0):
        self._send(struct.pack(">BBHH", 5, mask, x, y))

    def cut_text(self, text):
        self._send(struct.pack(">B3xI", 6, len(text)) + text)

    # --- server messages ----------------------------------------------------------
    def read_message(self):
        (t,) = struct.unpack(">B", self._recv(1))
        if t == 0:
            self._read_update()
        elif t == 1:
            _, first, n = struct.unpack(">BHH", self._recv(5))
            self._recv(6 * n)
        elif t == 2:
            pass
        elif t == 3:
            (ln,) = struct.unpack(">3xI", self._recv(7))
            self._recv(ln)
        else:
            raise RFBError(f"unknown server message {t}")
        return t

    def _read_update(self):
        (n,) = struct.unpack(">xH", self._recv(3))
        for _ in range(n):
            x, y, w, h, enc = struct.unpack(">HHHHi", self._recv(12))
            if enc == ENC_DESKTOP_SIZE:
                self._resize(w, h)
                self.resizes.append((w, h))
            elif enc == ENC_RAW:
                data = self._recv(w * h * 4)
                if x + w > self.width or y + h > self.height:
                    raise RFBError(f"rectangle {w}x{h}+{x}+{y} outside {self.width}x{self.height}")
                for row in range(h):
                    off = ((y + row) * self.width + x) * 4
                    self.fb[off:off + w * 4] = data[row * w * 4:(row + 1) * w * 4]
            else:
                raise RFBError(f"unexpected encoding {enc}")
        self.updates += 1

    def wait_update(self, timeout=5.0, incremental=True):
        """Request an update and read messages until one arrives; False on timeout."""
        self.request(incremental)
        return self._wait_for(lambda: True, timeout)

    def _wait_for(self, done, timeout):
        end = time.monotonic() + timeout
        start_updates = self.updates
        while time.monotonic() < end:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                t = self.read_message()
            except socket.timeout:
                return False
            if t == 0 and self.updates > start_updates and done():
                return True
        return False

    def settle(self, quiet=0.5, timeout=20.0):
        """Keep taking updates until the screen has not changed for `quiet` seconds."""
        end = time.monotonic() + timeout
        self.wait_update(timeout=5.0, incremental=False)
        while time.monotonic() < end:
            if not self.wait_update(timeout=quiet):
                return True
        return False

    def snapshot(self, delay=0.5, timeout=10.0):
        """Let the screen settle for `delay` seconds (taking whatever arrives), then take
        a whole fresh frame. (Waiting for silence does not work on a text screen: the
        cursor blinks.)"""
        end = time.monotonic() + delay
        self.request()
        while time.monotonic() < end:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                if self.read_message() == 0:
                    self.request()
            except socket.timeout:
                break
        return self.wait_update(timeout=timeout, incremental=False)

    # --- pictures -----------------------------------------------------------------
    def pixel(self, x, y):
        off = (y * self.width + x) * 4
        b, g, r = self.fb[off], self.fb[off + 1], self.fb[off + 2]
        return (r << 16) | (g << 8) | b

    def rgb_rows(self):
        for y in range(self.height):
            row = bytearray()
            base = y * self.width * 4
            for x in range(self.width):
                o = base + 4 * x
                row += bytes((self.fb[o + 2], self.fb[o + 1], self.fb[o]))
            yield bytes(row)

    def save_png(self, path):
        write_png(path, self.width, self.height, self.rgb_rows())


def write_png(path, w, h, rows):
    raw = b"".join(b"\0" + r for r in rows)

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xffffffff)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snap")
    s.add_argument("addr")
    s.add_argument("out")
    s.add_argument("--password")
    s.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()
    c = RFB(a.addr, password=a.password, timeout=a.timeout)
    if not c.wait_update(timeout=a.timeout, incremental=False):
        print("no frame", file=sys.stderr)
        return 1
    c.save_png(a.out)
    print(f"{c.width}x{c.height} {c.rx_bytes} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
