# ssmcp's instance-side helper, shipped inside the ssmcp binary and started through a
# Session Manager command session for one copy. Python 3.6+, standard library only.
#
# With the argument "pull" it is started by Run Command instead (the S3 transport): it
# reads one request line on stdin, fetches the bundle from the presigned URL in it and
# places it exactly as an upload through a port session would be, then prints
# "<RS>SSMCP-RESULT <json>". "export" (downloads through S3) lists and spools the
# sources and uploads the spool with a presigned PUT; "parts" uploads a spool too big
# for one PUT with presigned part URLs.
#
# It listens on 127.0.0.1 (random port) and prints "<RS>SSMCP-READY <port> <token>".
# Port sessions then connect to it; each connection must present the token first, so no
# other local user can talk to it. Requests are one JSON line; data travels in ssmcp's
# bundle format (see docs/transports.md). Uploads are staged under temporary names and
# renamed into place only after every file's SHA-256 matched, so a failed copy leaves
# nothing partial and the previous files untouched.

import binascii
import errno
import hashlib
import hmac
import json
import os
import shutil
import socket
import stat
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib

CHUNK = 256 * 1024
IDLE_EXIT = 900  # seconds without a connection before giving up on the client
MAX_LINE = 64 << 20  # a --sync inventory names every file of the tree
LINGER = 30  # seconds to drain a refused client's input

META = struct.Struct(">IqI")  # mode, mtime seconds, mtime nanoseconds
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
RANGE = struct.Struct(">IQQ")


class Failure(Exception):
    """A failure reported to the client: a class that decides its exit code, a message."""

    def __init__(self, cls, message):
        Exception.__init__(self, message)
        self.cls = cls
        self.message = message


def os_failure(what, path, err):
    code = getattr(err, "errno", None)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        cls = "permission"
    elif code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        cls = "space"
    else:
        cls = "write"
    reason = getattr(err, "strerror", None) or str(err)
    return Failure(cls, "%s %s: %s" % (what, shown(path), reason))


def shown(path):
    return path.decode("utf-8", "backslashreplace")


def home():
    return os.fsencode(os.path.expanduser("~"))


def absolute(path):
    if path == b"~" or path.startswith(b"~/"):
        return home() + path[1:]
    if not path.startswith(b"/"):
        return os.path.join(home(), path)
    return path


# ---------------------------------------------------------------- bundle records

def read_exact(rf, n):
    data = rf.read(n)
    if data is None or len(data) != n:
        raise Failure("protocol", "the bundle ended early")
    return data


def read_bytes16(rf):
    (n,) = U16.unpack(read_exact(rf, 2))
    return read_exact(rf, n)


def bytes16(b):
    return U16.pack(len(b)) + b


def meta_of(st):
    ns = st.st_mtime_ns
    return META.pack(stat.S_IMODE(st.st_mode), ns // 1000000000, ns % 1000000000)


def split_rel(path):
    """Components of a bundle path; refuses anything that could leave the destination."""
    if not path or b"\0" in path or path.startswith(b"/"):
        raise Failure("protocol", "unsafe path in bundle: %r" % path)
    parts = path.split(b"/")
    for i, p in enumerate(parts):
        if p == b".." or p == b"" or (p == b"." and i > 0):
            raise Failure("protocol", "unsafe path in bundle: %r" % path)
    return parts


# ---------------------------------------------------------------- -C: zlib streams

class Inflater:
    """Reads one complete zlib stream from a buffered reader as if it were plain."""

    def __init__(self, raw):
        self.raw = raw
        self.z = zlib.decompressobj()
        self.buf = b""
        self.pos = 0

    def _more(self):
        if self.z.eof:
            return False
        # What zlib still holds (input it had no room to decode) comes first; only
        # then wait for the network, which may have nothing more to send.
        out = self.z.decompress(self.z.unconsumed_tail, 4 * CHUNK)
        if not out and not self.z.eof:
            data = self.raw.read1(CHUNK)
            if not data:
                return False
            out = self.z.decompress(data, 4 * CHUNK)
        self.buf = out
        self.pos = 0
        return True

    def read(self, n):
        parts = []
        while n > 0:
            if self.pos >= len(self.buf) and not self._more():
                break
            piece = self.buf[self.pos:self.pos + n]
            self.pos += len(piece)
            n -= len(piece)
            parts.append(piece)
        return b"".join(parts)


class Deflater:
    """Writes through one zlib stream; finish() ends it."""

    def __init__(self, raw):
        self.raw = raw
        self.z = zlib.compressobj(6)

    def write(self, data):
        self.raw.write(self.z.compress(data))

    def finish(self):
        self.raw.write(self.z.flush())
        self.raw.flush()


class Plain:
    def __init__(self, raw):
        self.raw = raw

    def write(self, data):
        self.raw.write(data)

    def finish(self):
        self.raw.flush()


# ---------------------------------------------------------------- receiving (upload)

def new_tag():
    """What this process's temporaries carry: its pid (so a later run can tell that the
    owner is gone) and a random part. Never the connection token: temporary names can be
    read by anyone who can list the destination."""
    return b"%d-%s" % (os.getpid(), binascii.hexlify(os.urandom(6)))


LEFTOVER_MAX_AGE = 24 * 3600


def leftover_owner(name):
    """The pid in a temporary's name `.NAME.ssmcp-PID-TAG.(tmp|lnk|new)`, else None."""
    if not name.startswith(b"."):
        return None
    at = name.rfind(b".ssmcp-")
    if at < 1:
        return None
    stem, _, suffix = name[at + 7:].rpartition(b".")
    pid, _, tag = stem.partition(b"-")
    if suffix not in (b"tmp", b"lnk", b"new") or len(tag) != 12 or not pid.isdigit():
        return None
    try:
        int(tag, 16)
    except ValueError:
        return None
    return int(pid) or None


def owner_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def reap_leftovers(directory):
    """Remove what killed runs left in `directory`: temporaries (and --atomic staging
    trees) whose owner process is gone, or older than a day whoever owns the pid now.
    Trees swapped out (.old) are never touched: they may be the only copy after a crash
    between the two renames of a swap. Returns how many were removed."""
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    removed = 0
    for name in names:
        pid = leftover_owner(name)
        if pid is None or pid == os.getpid():
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if time.time() - st.st_mtime <= LEFTOVER_MAX_AGE and owner_alive(pid):
            continue
        if stat.S_ISDIR(st.st_mode) != name.endswith(b".new"):
            continue
        remove_tree(path)
        removed += 1
    return removed


class Stage:
    """Everything one upload writes, so it can be committed or undone as a whole."""

    def __init__(self, roots, preserve, keep=None):
        self.roots = roots  # top name -> final absolute path
        # --delete: final paths the client has but did not resend (unchanged); None
        # when nothing is to be deleted.
        self.keep = keep
        self.token = new_tag()
        self.reaped_in = set()  # directories already cleared of killed runs' leftovers
        self.reaped = 0
        self.preserve = preserve
        self.umask = current_umask()
        self.created = []  # directories we made, in creation order
        self.dirs = []  # (path, mode, mtime, created by us) to apply at commit
        self.files = []  # (temp, final)
        self.links = []  # (temp, final)
        self.swaps = []  # (staging root, final root) for trees built beside
        self.staging = set()  # staging roots: written in place, removed whole on failure
        self.kinds = {}  # final path -> b"d" / b"f" / b"l" for everything staged so far
        self.deleted = 0
        self.verified = set()  # directories known to be real (checked or made by us)

    def claim(self, path, kind):
        """One entry per path, and nothing below a staged symlink or file: a bundle that
        tries to write through a link it brought itself is refused before anything lands."""
        if path in self.kinds and not (kind == b"d" and self.kinds[path] == b"d"):
            raise Failure("protocol", "the bundle names %s twice" % shown(path))
        parent = os.path.dirname(path)
        while parent and parent != b"/":
            seen = self.kinds.get(parent)
            if seen == b"d":
                break  # its own ancestors were checked when it was claimed
            if seen is not None:
                raise Failure("protocol", "refusing to write through the symlink %s" % shown(parent))
            parent = os.path.dirname(parent)
        self.kinds[path] = kind

    def stage_beside(self, top, replace):
        """Build this tree beside its destination and swap it in at commit: for --atomic,
        and for a tree that does not exist yet. Inside a staging tree files are written
        under their own names (it all appears with one rename), which halves the
        metadata work for many small files."""
        final = self.roots[top]
        self.reap(os.path.dirname(final.rstrip(b"/")) or b"/")
        staging = sibling(final, self.token, b"new")
        self.swaps.append((staging, final, replace))
        self.roots[top] = staging
        self.staging.add(staging)

    def carry(self, rel):
        """--sync under --atomic: a file the bundle left out because the destination
        already holds it must be in the tree that replaces the destination too. Linked
        from the old tree (same directory, same file system), copied where the kernel
        refuses the link (protected_hardlinks)."""
        parts = split_rel(rel)
        root = self.roots.get(parts[0])
        replaced = [old for staging, old, replace in self.swaps if staging == root and replace]
        if not replaced or len(parts) < 2:
            return  # not a tree being replaced: the file stays where it is
        old = os.path.join(replaced[0], *parts[1:])
        final = os.path.join(root, *parts[1:])
        self.claim(final, b"f")
        parent = self.ensure_dirs(root, parts[1:-1])
        try:
            if not stat.S_ISREG(os.lstat(old).st_mode):
                raise FileNotFoundError(errno.ENOENT, "not a regular file", old)
        except OSError:
            raise Failure("usage", "%s changed on the instance while the copy ran; run the copy again" % shown(old))
        new = os.path.join(parent, parts[-1])
        try:
            os.link(old, new, follow_symlinks=False)
        except OSError:
            try:
                shutil.copy2(old, new, follow_symlinks=False)
            except OSError as e:
                raise os_failure("cannot keep", old, e)

    def reap(self, directory):
        if directory not in self.reaped_in:
            self.reaped_in.add(directory)
            self.reaped += reap_leftovers(directory)

    def in_staging(self, path):
        return any(path == r or path.startswith(r + b"/") for r in self.staging)

    def target(self, rel):
        parts = split_rel(rel)
        if parts[0] not in self.roots:
            raise Failure("protocol", "bundle path outside the announced sources: %s" % shown(rel))
        return self.roots[parts[0]], parts[1:]

    def ensure_dirs(self, root, parts):
        """Make root/parts… as real directories, never passing through a symlink."""
        whole = os.path.join(root, *parts) if parts else root
        if whole in self.verified:
            return whole
        path = root
        if not os.path.lexists(root):
            self.mkdir(root)
        for p in [None] + parts:
            if p is not None:
                path = os.path.join(path, p)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                self.mkdir(path)
                continue
            except OSError as e:
                raise os_failure("cannot inspect", path, e)
            if stat.S_ISLNK(st.st_mode) and p is not None:
                raise Failure("protocol", "refusing to write through the symlink %s" % shown(path))
            if not os.path.isdir(path):
                raise Failure("usage", "%s exists and is not a directory" % shown(path))
        self.verified.add(whole)
        return path

    def mkdir(self, path):
        try:
            os.mkdir(path, 0o700)
        except OSError as e:
            raise os_failure("cannot create directory", path, e)
        self.created.append(path)

    def place(self, rel, kind):
        """Claim a file or link path, then make sure its parent directories exist."""
        root, parts = self.target(rel)
        final = os.path.join(root, *parts) if parts else root
        self.claim(final, kind)
        parent = self.ensure_dirs(root, parts[:-1]) if parts else os.path.dirname(root)
        return parent, os.path.basename(final), final

    def directory(self, rel, mode, mtime):
        root, parts = self.target(rel)
        self.claim(os.path.join(root, *parts) if parts else root, b"d")
        path = self.ensure_dirs(root, parts)
        self.dirs.append((path, mode, mtime, path in self.created))

    def file(self, rf, rel, mode, mtime, size):
        parent, name, final = self.place(rel, b"f")
        direct = self.in_staging(final)
        if not direct:
            self.reap(parent)
        temp = final if direct else os.path.join(parent, b"." + name[:180] + b".ssmcp-" + self.token + b".tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        # Created with its final permission bits (the kernel applies the umask), so
        # most files need no chmod: one system call less per file counts at 10,000.
        wanted = mode & 0o7777 if self.preserve else mode & 0o777 & ~self.umask
        try:
            fd = os.open(temp, flags, wanted & 0o777)
        except OSError as e:
            raise os_failure("cannot create", final, e)
        if not direct:
            self.files.append((temp, final))
        digest = hashlib.sha256()
        try:
            left = size
            while left:
                chunk = rf.read(min(CHUNK, left))
                if not chunk:
                    raise Failure("protocol", "the bundle ended inside %s" % shown(rel))
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                left -= len(chunk)
            if not hmac.compare_digest(digest.digest(), read_exact(rf, 32)):
                raise Failure("integrity", "SHA-256 mismatch for %s" % shown(final))
            if wanted != wanted & 0o777 & ~self.umask:
                os.fchmod(fd, wanted)
            if self.preserve:
                os.utime(fd, ns=ns_pair(mtime))
        except OSError as e:
            raise os_failure("cannot write", final, e)
        finally:
            os.close(fd)

    def link(self, rel, target, mtime):
        parent, name, final = self.place(rel, b"l")
        direct = self.in_staging(final)
        if not direct:
            self.reap(parent)
        temp = final if direct else os.path.join(parent, b"." + name[:180] + b".ssmcp-" + self.token + b".lnk")
        try:
            os.symlink(target, temp)
        except OSError as e:
            raise os_failure("cannot create symlink", final, e)
        if not direct:
            self.links.append((temp, final))
        if self.preserve:
            try:
                os.utime(temp, ns=ns_pair(mtime), follow_symlinks=False)
            except (OSError, NotImplementedError):
                pass

    def commit(self):
        for temp, final in self.files + self.links:
            try:
                is_dir = stat.S_ISDIR(os.lstat(final).st_mode)
            except OSError:
                is_dir = False
            if is_dir:
                raise Failure("usage", "cannot overwrite directory %s with a file" % shown(final))
        try:
            for temp, final in self.files + self.links:
                os.replace(temp, final)
            # Deepest first, so setting a parent's mtime is not undone by its children.
            for path, mode, mtime, created in sorted(self.dirs, key=lambda d: -d[0].count(b"/")):
                if self.preserve:
                    os.chmod(path, mode & 0o7777)
                    os.utime(path, ns=ns_pair(mtime))
                elif created:
                    os.chmod(path, mode & 0o777 & ~self.umask)
            for staging, final, replace in self.swaps:
                swap_in(staging, final, self.token, replace)
            if self.keep is not None:
                self.deleted = self.delete_extraneous()
        except OSError as e:
            raise os_failure("cannot place", getattr(e, "filename", b"") or b"", e)
        self.files, self.links, self.created, self.swaps = [], [], [], []

    def delete_extraneous(self):
        """--delete: remove what the destination trees hold that the copy did not bring
        or keep. Never follows symlinks; only under the copy's own directory roots."""
        wanted = set(self.kinds) | self.keep
        staged = set(r for r, _, _ in self.swaps)
        count = 0
        for top, root in self.roots.items():
            if root in staged or self.kinds.get(root) != b"d":
                continue
            pending = [root]
            while pending:
                d = pending.pop()
                for name in os.listdir(d):
                    p = os.path.join(d, name)
                    if p in wanted:
                        if self.kinds.get(p) == b"d":
                            pending.append(p)
                        continue
                    st = os.lstat(p)
                    if stat.S_ISDIR(st.st_mode):
                        remove_tree(p)
                    else:
                        os.unlink(p)
                    count += 1
        return count

    def abort(self):
        for temp, _ in self.files + self.links:
            try:
                os.unlink(temp)
            except OSError:
                pass
        for staging, _, _ in self.swaps:
            remove_tree(staging)
        for path in reversed(self.created):
            try:
                os.rmdir(path)
            except OSError:
                pass


def current_umask():
    """The umask, read without changing it where Linux shows it (4.7+): setting and
    restoring it races with the other connections' threads creating files."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ns_pair(mtime):
    return (mtime, mtime)


def sibling(final, token, what):
    parent, name = os.path.split(final.rstrip(b"/"))
    return os.path.join(parent, b"." + name[:180] + b".ssmcp-" + token + b"." + what)


def swap_in(staging, final, token, replace):
    """Put the tree `staging` at `final`. With `replace` (--atomic), a tree already there
    is swapped out with two renames and removed; otherwise one that appeared while we
    copied is left alone and the copy fails."""
    if os.path.lexists(final):
        if not replace:
            raise Failure("usage", "%s appeared while the copy ran; it was left alone" % shown(final))
        old = sibling(final, token, b"old")
        os.rename(final, old)
        os.rename(staging, final)
        remove_tree(old)
    else:
        os.rename(staging, final)


def remove_tree(path):
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        for name in os.listdir(path):
            remove_tree(os.path.join(path, name))
        try:
            os.rmdir(path)
        except OSError:
            pass
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


def resolve_destination(dest, tops):
    """scp/rsync rules: an existing directory receives the sources by name; otherwise a
    single source becomes `dest`, and `dest/` is created to receive them. Returns
    (top name -> final path, directory to create first or None)."""
    path = absolute(dest)
    wants_dir = dest.endswith(b"/")
    names = [t["name"] for t in tops]
    if os.path.isdir(path):
        return dict((n, path if n == b"." else os.path.join(path, n)) for n in names), None
    if os.path.lexists(path):
        if len(tops) != 1 or tops[0]["dir"]:
            raise Failure("usage", "%s exists and is not a directory" % shown(dest))
        return {names[0]: path}, None
    path = path.rstrip(b"/") or b"/"
    parent = os.path.dirname(path) or b"/"
    if not os.path.isdir(parent):
        raise Failure("usage", "the destination directory %s does not exist" % shown(parent))
    if len(tops) == 1 and not wants_dir:
        return {names[0]: path}, None
    if not wants_dir:
        raise Failure("usage", "%s is not a directory (several sources need one; end it with / to create it)" % shown(dest))
    return dict((n, path if n == b"." else os.path.join(path, n)) for n in names), path


class Live:
    """The uploads under way in this process, so SIGTERM or SIGHUP (the session ended,
    the instance shutting down) can undo them before the process goes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.stages = set()

    def add(self, stage):
        with self.lock:
            self.stages.add(stage)

    def discard(self, stage):
        with self.lock:
            self.stages.discard(stage)

    def abort_all(self):
        with self.lock:
            stages, self.stages = list(self.stages), set()
        for stage in stages:
            stage.abort()


LIVE = Live()


def exit_cleanly_on_signals():
    """SIGTERM and SIGHUP undo every upload under way, then exit."""
    import signal

    def handler(signum, _frame):
        LIVE.abort_all()
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def op_push(req, rf, wf):
    tops = [{"name": unhex(t["name"]), "dir": bool(t["dir"])} for t in req["tops"]]
    for t in tops:
        if t["name"] != b".":
            if len(split_rel(t["name"])) != 1:
                raise Failure("protocol", "a source name must be one path component")
    roots, create = resolve_destination(unhex(req["dest"]), tops)
    keep = None
    if req.get("delete"):
        keep = set()
        for rel in req.get("keep", []):
            parts = split_rel(unhex(rel))
            if parts[0] not in roots:
                raise Failure("protocol", "a kept path outside the announced sources")
            keep.add(os.path.join(roots[parts[0]], *parts[1:]) if parts[1:] else roots[parts[0]])
    stage = Stage(roots, bool(req.get("preserve")), keep)
    if req.get("compress"):
        rf = Inflater(rf)
    LIVE.add(stage)
    try:
        if create is not None:
            stage.mkdir(create)
        for t in tops:
            fresh = not os.path.lexists(roots[t["name"]])
            if t["dir"] and (req.get("atomic") or fresh):
                stage.stage_beside(t["name"], bool(req.get("atomic")))
        files = total = entries = 0
        while True:
            tag = read_exact(rf, 1)
            if tag == b"E":
                (count,) = U64.unpack(read_exact(rf, 8))
                if count != entries:
                    raise Failure("protocol", "the bundle announced %d entries but carried %d" % (count, entries))
                break
            entries += 1
            if tag == b"D":
                rel = read_bytes16(rf)
                mode, secs, nanos = META.unpack(read_exact(rf, META.size))
                stage.directory(rel, mode, secs * 1000000000 + nanos)
            elif tag == b"F":
                rel = read_bytes16(rf)
                mode, secs, nanos = META.unpack(read_exact(rf, META.size))
                (size,) = U64.unpack(read_exact(rf, 8))
                stage.file(rf, rel, mode, secs * 1000000000 + nanos, size)
                files += 1
                total += size
            elif tag == b"L":
                rel = read_bytes16(rf)
                target = read_bytes16(rf)
                _, secs, nanos = META.unpack(read_exact(rf, META.size))
                stage.link(rel, target, secs * 1000000000 + nanos)
            elif tag == b"X":
                raise Failure("aborted", read_bytes16(rf).decode("utf-8", "replace"))
            else:
                raise Failure("protocol", "unknown bundle record %r" % tag)
        for rel in req.get("unchanged", []):
            stage.carry(unhex(rel))
        stage.commit()
        reply(wf, {"ok": True, "files": files, "bytes": total, "deleted": stage.deleted,
                   "reaped": stage.reaped})
    except BaseException:
        stage.abort()
        raise
    finally:
        LIVE.discard(stage)


def op_inventory(req, wf):
    """--sync: for each file the client would send, the SHA-256 of what the destination
    already holds there, when it is a regular file of the same size."""
    tops = [{"name": unhex(t["name"]), "dir": bool(t["dir"])} for t in req["tops"]]
    roots, _ = resolve_destination(unhex(req["dest"]), tops)
    answers = []
    for rel_hex, size in req["files"]:
        parts = split_rel(unhex(rel_hex))
        if parts[0] not in roots:
            raise Failure("protocol", "an inventory path outside the announced sources")
        path = os.path.join(roots[parts[0]], *parts[1:]) if parts[1:] else roots[parts[0]]
        answers.append(b"\0")
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_size == size:
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(CHUNK), b""):
                        digest.update(chunk)
                answers[-1] = b"\1" + digest.digest()
        except OSError:
            pass
    reply(wf, {"ok": True, "count": len(answers)})
    for a in answers:
        wf.write(a)
    wf.flush()


# ---------------------------------------------------------------- sending (download)

class Manifests:
    """Files listed for download, by manifest id, so reads can name them by index."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lists = {}

    def add(self, files):
        with self.lock:
            key = "m%d" % (len(self.lists) + 1)
            self.lists[key] = files
            return key

    def get(self, key):
        with self.lock:
            if key not in self.lists:
                raise Failure("protocol", "unknown manifest %s" % key)
            return self.lists[key]


def op_list(req, wf, manifests, listed=None):
    """Answer with the listing; `listed` (when given) receives each file's size."""
    listed = [] if listed is None else listed
    recursive = bool(req.get("recursive"))
    records, files, warnings = [], [], []
    for src in req["sources"]:
        raw = unhex(src["path"])
        path = absolute(raw)
        try:
            st = os.stat(path)
        except OSError as e:
            raise Failure("source", "%s: %s" % (shown(raw), e.strerror))
        top = b"." if src.get("contents") else os.path.basename(path.rstrip(b"/")) or b"."
        if stat.S_ISDIR(st.st_mode):
            if not recursive:
                raise Failure("usage", "%s is a directory (use -r to copy directories)" % shown(raw))
            walk(path, top, st, records, files, warnings)
        elif stat.S_ISREG(st.st_mode):
            if top == b".":
                raise Failure("usage", "%s is not a directory" % shown(raw))
            files.append(path)
            records.append(b"M" + bytes16(top) + meta_of(st) + U64.pack(st.st_size))
        else:
            raise Failure("usage", "%s is not a regular file or directory" % shown(raw))
    key = manifests.add(files)
    listed.extend(U64.unpack(r[-8:])[0] for r in records if r[:1] == b"M")
    reply(wf, {"ok": True, "id": key})
    for w in warnings:
        wf.write(b"W" + bytes16(w.encode("utf-8")[:60000]))
    for r in records:
        wf.write(r)
    wf.write(b"E" + U64.pack(len(records)))
    wf.flush()


def walk(path, rel, st, records, files, warnings):
    records.append(b"D" + bytes16(rel) + meta_of(st))
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise Failure("source", "cannot read directory %s: %s" % (shown(path), e.strerror))
    for name in names:
        child = os.path.join(path, name)
        child_rel = rel + b"/" + name
        try:
            cst = os.lstat(child)
        except OSError as e:
            warnings.append("skipped %s: %s" % (shown(child), e.strerror))
            continue
        if stat.S_ISDIR(cst.st_mode):
            walk(child, child_rel, cst, records, files, warnings)
        elif stat.S_ISREG(cst.st_mode):
            files.append(child)
            records.append(b"M" + bytes16(child_rel) + meta_of(cst) + U64.pack(cst.st_size))
        elif stat.S_ISLNK(cst.st_mode):
            records.append(b"L" + bytes16(child_rel) + bytes16(os.readlink(child)) + meta_of(cst))
        else:
            warnings.append("skipped %s: not a regular file, directory or symlink" % shown(child))


def op_read(req, wf, manifests):
    files = manifests.get(req["id"])
    reply(wf, {"ok": True})
    out = Deflater(wf) if req.get("compress") else Plain(wf)
    try:
        for index, offset, length in req["ranges"]:
            send_range(out, files, index, offset, length)
    except Failure as f:
        # The answer has begun: the failure travels as an abort record instead.
        out.write(b"X" + bytes16(f.message.encode("utf-8", "replace")))
        out.finish()
        return
    out.write(b"E" + U64.pack(len(req["ranges"])))
    out.finish()


def send_range(out, files, index, offset, length):
    if not 0 <= index < len(files):
        raise Failure("protocol", "no file %d in the manifest" % index)
    path = files[index]
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise Failure("source", "cannot open %s: %s" % (shown(path), e.strerror))
    with os.fdopen(fd, "rb", buffering=0) as f:
        f.seek(offset)
        out.write(b"R" + RANGE.pack(index, offset, length))
        digest = hashlib.sha256()
        left = length
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                # The file shrank after it was listed. The range is announced, so its
                # length must still be sent; zeros and a digest that cannot match
                # make the client reject it (and nothing is put in place).
                while left:
                    pad = min(CHUNK, left)
                    out.write(b"\0" * pad)
                    left -= pad
                out.write(b"\0" * 32)
                return
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
        out.write(digest.digest())


# ---------------------------------------------------------------- connections

def unhex(s):
    return binascii.unhexlify(s.encode("ascii"))


def reply(wf, obj):
    wf.write(json.dumps(obj).encode("utf-8") + b"\n")
    wf.flush()


def refuse(conn, rf, wf, cls, message):
    """Answer with a failure, then read and discard what the client is still sending
    until it hangs up (bounded): closing a socket with unread input resets the
    connection, and the reset can destroy the answer before the client reads it."""
    reply(wf, {"ok": False, "class": cls, "error": message})
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(LINGER)
        while rf.read1(CHUNK) if hasattr(rf, "read1") else rf.read(CHUNK):
            pass
    except (OSError, socket.timeout):
        pass


def serve(conn, token, manifests, activity):
    activity.enter()
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rf = conn.makefile("rb", buffering=CHUNK)
        wf = conn.makefile("wb", buffering=CHUNK)
        presented = rf.readline(200).rstrip(b"\n")
        if not hmac.compare_digest(presented, token):
            return
        while True:
            line = rf.readline(MAX_LINE)
            if not line:
                return
            try:
                req = json.loads(line.decode("utf-8"))
                op = req.get("op")
                if op == "push":
                    op_push(req, rf, wf)
                elif op == "list":
                    op_list(req, wf, manifests)
                elif op == "read":
                    op_read(req, wf, manifests)
                elif op == "inventory":
                    op_inventory(req, wf)
                else:
                    raise Failure("protocol", "unknown request %r" % op)
            except Failure as f:
                refuse(conn, rf, wf, f.cls, f.message)
                return
            except (ValueError, KeyError, TypeError) as e:
                refuse(conn, rf, wf, "protocol", "bad request: %s" % e)
                return
            except OSError as e:
                f = os_failure("cannot write", os.fsencode(getattr(e, "filename", None) or ""), e)
                refuse(conn, rf, wf, f.cls, f.message)
                return
    except (OSError, EOFError):
        pass
    finally:
        activity.leave()
        try:
            conn.close()
        except OSError:
            pass


class Activity:
    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.last = time.time()

    def enter(self):
        with self.lock:
            self.active += 1

    def leave(self):
        with self.lock:
            self.active -= 1
            self.last = time.time()

    def busy(self):
        with self.lock:
            return self.active > 0

    def idle_for(self):
        with self.lock:
            return 0 if self.active else time.time() - self.last


def exit_when_told_or_orphaned(activity):
    """Any byte on our terminal is ssmcp saying goodbye; the terminal closing means the
    session is gone; a long idle spell means the client is. Connections still cleaning
    up (a cancelled upload removing its temporaries) get a bounded moment to finish."""
    def watch_terminal():
        try:
            os.read(0, 1)
        except OSError:
            pass
        deadline = time.time() + 30
        while activity.busy() and time.time() < deadline:
            time.sleep(0.02)
        os._exit(0)

    def watch_idle():
        while activity.idle_for() < IDLE_EXIT:
            time.sleep(5)
        os._exit(0)

    for fn in (watch_terminal, watch_idle):
        t = threading.Thread(target=fn)
        t.daemon = True
        t.start()


class Marked:
    """Replies for Run Command: one marked line in the command's output."""

    def __init__(self, out):
        self.out = out

    def write(self, data):
        self.out.write(b"\x1e" + b"SSMCP-RESULT " + data)

    def flush(self):
        self.out.flush()


def fetch(url):
    try:
        return urllib.request.urlopen(url, timeout=60)
    except urllib.error.HTTPError as e:
        raise Failure("fetch", "S3 refused the download of the bundle: HTTP %d %s" % (e.code, e.reason))
    except (urllib.error.URLError, OSError) as e:
        raise Failure("fetch", "the instance cannot reach S3: %s" % getattr(e, "reason", e))


def pull():
    out = Marked(sys.stdout.buffer)
    try:
        req = json.loads(sys.stdin.readline())
        body = fetch(req.pop("url"))
        try:
            op_push(req, body, out)
        except (socket.timeout, ConnectionError) as e:
            raise Failure("fetch", "the download of the bundle from S3 broke off: %s" % e)
        except OSError as e:
            raise os_failure("cannot write", os.fsencode(getattr(e, "filename", None) or ""), e)
    except Failure as f:
        reply(out, {"ok": False, "class": f.cls, "error": f.message})
        sys.stderr.write("ssmcp: %s\n" % f.message)
        sys.exit(1)
    except (ValueError, KeyError, TypeError) as e:
        reply(out, {"ok": False, "class": "protocol", "error": "bad request: %s" % e})
        sys.exit(1)


SPOOL_PREFIX = "ssmcp-spool-"
SPOOL_MAX_AGE = 24 * 3600


def reap_spools():
    """Remove spools a run left a day ago or more (it was killed between its two
    commands); the temporary directory is the instance's own."""
    import tempfile
    tmp = tempfile.gettempdir()
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for name in names:
        if name.startswith(SPOOL_PREFIX):
            path = os.path.join(tmp, name)
            try:
                if time.time() - os.lstat(path).st_mtime > SPOOL_MAX_AGE:
                    os.unlink(path)
            except OSError:
                pass


def spool_path(name):
    """A spool named in a request, only ever one of ours in the temporary directory."""
    import tempfile
    if name != os.path.basename(name) or not name.startswith(SPOOL_PREFIX):
        raise Failure("protocol", "bad request: not a spool of ours: %s" % name)
    return os.path.join(tempfile.gettempdir(), name)


def s3_put(url, body, length, headers, what):
    """One presigned PUT of `length` bytes from the file-like `body`; S3's ETag back."""
    # urllib would label the body a form, which a server may try to parse.
    h = {"Content-Length": str(length), "Content-Type": "application/octet-stream"}
    h.update(headers)
    put = urllib.request.Request(url, data=body, method="PUT", headers=h)
    try:
        resp = urllib.request.urlopen(put, timeout=120)
        etag = resp.headers.get("ETag", "")
        resp.close()
        return etag
    except urllib.error.HTTPError as e:
        raise Failure("fetch", "S3 refused the upload of %s: HTTP %d %s" % (what, e.code, e.reason))
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, ConnectionError):
            # S3 answers early and closes when it will not take a body (too large, or
            # refused); the sender then sees the closed connection, not the answer.
            raise Failure("aborted", "S3 closed the connection during the upload of %s (%s); it may have refused it, e.g. as larger than it takes" % (what, reason))
        raise Failure("fetch", "the instance cannot reach S3: %s" % reason)


class Window:
    """`length` bytes of a file from `offset`, read as urllib streams a body."""

    def __init__(self, f, offset, length):
        self.f, self.left = f, length
        f.seek(offset)

    def read(self, n=-1):
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data


def run_marked(work):
    """Run `work(request)` with the request on stdin; its answer, or its failure, as the
    one marked result line. SIGTERM (a cancelled command) unwinds like an error, so
    what `work` cleans up in `finally` is cleaned up then too."""
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Marked(sys.stdout.buffer)
    try:
        reply(out, work(json.loads(sys.stdin.readline())))
    except Failure as f:
        reply(out, {"ok": False, "class": f.cls, "error": f.message})
        sys.stderr.write("ssmcp: %s\n" % f.message)
        sys.exit(1)
    except OSError as e:
        f = os_failure("cannot spool the files for S3", os.fsencode(getattr(e, "filename", None) or ""), e)
        reply(out, {"ok": False, "class": f.cls, "error": f.message})
        sys.exit(1)
    except (ValueError, KeyError, TypeError) as e:
        reply(out, {"ok": False, "class": "protocol", "error": "bad request: %s" % e})
        sys.exit(1)


def export(req):
    """Run-Command mode for downloads through S3: the listing and every file's bytes,
    exactly as a port session would receive them, spooled to a temporary file (S3 wants
    the length first) and uploaded with the presigned PUT in the request. A spool larger
    than one PUT may carry (`put_limit`) is kept instead, for a second command that
    uploads it in parts (`parts`)."""
    import tempfile
    reap_spools()
    url = req.pop("url")
    put_limit = int(req.pop("put_limit", 5 << 30))
    manifests, sizes = Manifests(), []
    spool = tempfile.NamedTemporaryFile(prefix=SPOOL_PREFIX, delete=False)
    kept = False
    try:
        op_list(req, spool, manifests, sizes)
        ranges = [[i, 0, n] for i, n in enumerate(sizes) if n > 0]
        op_read({"id": "m1", "ranges": ranges}, spool, manifests)
        spool.flush()
        length = spool.tell()
        answer = {"ok": True, "bytes": length, "files": len(sizes)}
        if length > put_limit:
            kept = True
            answer["spool"] = os.path.basename(spool.name)
            return answer
        spool.seek(0)
        s3_put(url, spool, length, dict(req.get("headers", [])), "the files")
        return answer
    finally:
        spool.close()
        if not kept:
            os.unlink(spool.name)


def parts(req):
    """Upload a kept spool in parts: the part URLs (presigned UploadPart, one per part,
    `part_size` bytes each but the last) are fetched from the presigned GET in the
    request, so the command stays small; the spool is removed whatever happens. Without
    a URL the spool is only removed (the run gave up between its commands)."""
    path = spool_path(req["spool"])
    try:
        if not req.get("url"):
            return {"ok": True, "bytes": 0, "files": 0}
        plan = json.loads(fetch(req["url"]).read().decode())
        size = os.path.getsize(path)
        part_size, urls = int(plan["part_size"]), plan["urls"]
        if part_size <= 0 or len(urls) != (size + part_size - 1) // part_size:
            raise Failure("protocol", "bad request: %d part URLs for %d bytes" % (len(urls), size))
        headers = dict(plan.get("headers", []))
        etags = [None] * len(urls)
        errors = []

        def upload(i):
            try:
                with open(path, "rb") as f:
                    offset = i * part_size
                    length = min(part_size, size - offset)
                    etags[i] = s3_put(urls[i], Window(f, offset, length), length, headers, "part %d" % (i + 1))
            except Failure as e:
                errors.append(e)
            except OSError as e:
                errors.append(os_failure("cannot read the spool", os.fsencode(path), e))

        pending = list(range(len(urls)))
        while pending and not errors:
            batch, pending = pending[:4], pending[4:]
            threads = [threading.Thread(target=upload, args=(i,)) for i in batch]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        return {"ok": True, "bytes": size, "files": 0, "etags": etags}
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def listen(preferred):
    """A listening socket on 127.0.0.1: on `preferred` when it is free (the client opened
    its port session to that port while this started), otherwise on any free port; READY
    says which, and the client then opens its port session to that one instead."""
    for port in ([preferred] if preferred else []) + [0]:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind(("127.0.0.1", port))
        except OSError:
            listener.close()
            if port == 0:
                raise
            continue
        listener.listen(16)
        return listener


def main():
    if sys.argv[1:] == ["pull"]:
        exit_cleanly_on_signals()
        pull()
        return
    if sys.argv[1:] == ["export"]:
        run_marked(export)
        return
    if sys.argv[1:] == ["parts"]:
        run_marked(parts)
        return
    exit_cleanly_on_signals()
    token = binascii.hexlify(os.urandom(24))
    preferred = 0
    if len(sys.argv) == 3 and sys.argv[1] == "port" and sys.argv[2].isdigit():
        preferred = int(sys.argv[2])
    listener = listen(preferred if 0 < preferred < 65536 else 0)
    activity = Activity()
    manifests = Manifests()
    exit_when_told_or_orphaned(activity)
    marker = "\x1e" + "SSMCP" + "-READY"
    sys.stdout.write("%s %d %s\n" % (marker, listener.getsockname()[1], token.decode()))
    sys.stdout.flush()
    while True:
        conn, _ = listener.accept()
        t = threading.Thread(target=serve, args=(conn, token, manifests, activity))
        t.daemon = True
        t.start()


if __name__ == "__main__":
    main()
