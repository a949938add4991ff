# ssmcp's exec helper: runs one command with pipes, as `ssh host cmd` does, inside an
# AWS-StartInteractiveCommand session, whose only path is a terminal. Standard library
# only, Python 3.6 grammar (the receiver's rules).
#
# The terminal is put in raw mode, then everything crosses it as lines of printable
# ASCII, which neither the terminal nor the agent's UTF-8 handling can alter:
#   to ssmcp:   RS "SSMCP-EXEC-READY" LF once raw mode is on, then
#               "O" base64 LF (stdout), "E" base64 LF (stderr), "X" status LF (last)
#   from ssmcp: "I" base64 LF (stdin bytes), "Z" LF (stdin ends), "S" number LF (signal)
# The status is the command's exit code, or 128+N when signal N killed it.
import base64
import os
import queue
import signal
import subprocess
import sys
import threading
import tty

CHUNK = 765  # 1020 base64 characters: one frame fits the agent's 1 KiB reads


def write_all(fd, data, lock):
    with lock:
        while data:
            n = os.write(fd, data)
            data = data[n:]


def pump(src, kind, out, lock):
    while True:
        data = os.read(src, CHUNK)
        if not data:
            return
        write_all(out, kind + base64.b64encode(data) + b"\n", lock)


def feed_stdin(child, pending):
    while True:
        item = pending.get()
        if item is None:
            break
        try:
            child.stdin.write(item)
            child.stdin.flush()
        except OSError:
            # The command stopped reading (as with ssh, the rest is dropped).
            while pending.get() is not None:
                pass
            break
    try:
        child.stdin.close()
    except OSError:
        pass


HUNG_UP = []


def ignore(*_):
    pass


def hang_up(*_):
    # The terminal is gone (ssmcp gave up, the session was ended): the command hears
    # of it as it would in a terminal. Once: the helper is in the group too.
    if not HUNG_UP:
        HUNG_UP.append(True)
        try:
            os.killpg(os.getpgrp(), signal.SIGHUP)
        except OSError:
            pass


def read_requests(fd, child, pending, signalled):
    buf = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            hang_up()
            pending.put(None)
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.strip(b"\r")
            kind, rest = line[:1], line[1:]
            if kind == b"I":
                pending.put(base64.b64decode(rest))
            elif kind == b"Z":
                pending.put(None)
            elif kind == b"S":
                try:
                    signalled.append(int(rest))
                    os.killpg(os.getpgrp(), signalled[-1])
                except (OSError, ValueError):
                    pass
        if len(buf) > 1 << 20:
            return


def main():
    command = base64.b64decode(sys.argv[1]).decode("utf-8", "surrogateescape")
    tty_in, out = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        tty.setraw(tty_in)
    except Exception:
        pass
    lock = threading.Lock()
    try:
        child = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as e:
        write_all(out, b"\x1eSSMCP-EXEC-READY\n", lock)
        msg = ("ssmcp: cannot run /bin/sh: %s\n" % e.strerror).encode()
        write_all(out, b"E" + base64.b64encode(msg) + b"\nX127\n", lock)
        return
    # The command stays in the terminal's foreground group, with the helper: when the
    # session's process goes, the kernel hangs the group up, and the "S" requests signal
    # the group. The helper itself survives those signals through handlers (an ignored
    # signal would be inherited by the command; a handler is not).
    signal.signal(signal.SIGHUP, hang_up)
    write_all(out, b"\x1eSSMCP-EXEC-READY\n", lock)
    pending = queue.Queue(64)
    threads = [
        threading.Thread(target=pump, args=(child.stdout.fileno(), b"O", out, lock)),
        threading.Thread(target=pump, args=(child.stderr.fileno(), b"E", out, lock)),
    ]
    for t in threads:
        t.start()
    signalled = []
    requests = (read_requests, (tty_in, child, pending, signalled))
    for target, args in ((feed_stdin, (child, pending)), requests):
        t = threading.Thread(target=target, args=args)
        t.daemon = True
        t.start()
    code = child.wait()
    if signalled:
        # A process the shell was forking when the signal came missed it, and would keep
        # the output pipes open: the group gets the signal again (as a second ^C would).
        try:
            os.killpg(os.getpgrp(), signalled[-1])
        except OSError:
            pass
    for t in threads:
        t.join()
    if code < 0:
        code = 128 - code
    write_all(out, b"X%d\n" % code, lock)


if __name__ == "__main__":
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, ignore)
    main()
