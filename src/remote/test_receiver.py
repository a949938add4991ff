"""receiver.py's own tests, run by scripts/test with the machine's python3 (standard
library only): every request in tests/fixtures/receiver-protocol.json is accepted, and
every answer carries the fields, with the types, that the fixture shows and that
src/remote/protocol.rs reads. The Rust side checks its types against the same file, so
neither side can change a message without the other's tests failing.

    python3 src/remote/test_receiver.py -v
"""

import hashlib
import http.server
import importlib.util
import io
import json
import os
import socket
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

_spec = importlib.util.spec_from_file_location("receiver", os.path.join(HERE, "receiver.py"))
receiver = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(receiver)

with open(os.path.join(ROOT, "tests", "fixtures", "receiver-protocol.json")) as _f:
    FIXTURES = json.load(_f)


def request(name):
    return json.loads(json.dumps(FIXTURES["requests"][name]))


def bundle(entries):
    """A bundle as ssmcp sends it: (kind, path, data) with kind "D" or "F"."""
    out = b""
    for kind, rel, data in entries:
        if kind == "D":
            out += b"D" + receiver.bytes16(rel) + receiver.META.pack(0o40755, 0, 0)
        else:
            out += b"F" + receiver.bytes16(rel) + receiver.META.pack(0o100644, 0, 0)
            out += receiver.U64.pack(len(data)) + data + hashlib.sha256(data).digest()
    return out + b"E" + receiver.U64.pack(len(entries))


def first_line(raw):
    line, _, rest = raw.partition(b"\n")
    return json.loads(line.decode()), rest


class Answers(unittest.TestCase):
    """Runs each operation in a home directory of its own."""

    def setUp(self):
        self.home = tempfile.TemporaryDirectory()
        self.saved = (os.environ.get("HOME"), os.getcwd(), tempfile.tempdir)
        os.environ["HOME"] = self.home.name
        os.chdir(self.home.name)
        tempfile.tempdir = self.home.name
        for rel, data in [("app/dist/a.txt", b"abc"), ("app/dist/old.txt", b"x"), ("app/run.sh", b"echo\n")]:
            path = os.path.join(self.home.name, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)

    def tearDown(self):
        home, cwd, tmp = self.saved
        if home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = home
        os.chdir(cwd)
        tempfile.tempdir = tmp
        self.home.cleanup()

    def assertShaped(self, got, name):
        """Every field the golden answer has, with the same JSON type."""
        want = FIXTURES["answers"][name]
        for key, value in want.items():
            self.assertIn(key, got, "%s lacks %r: %r" % (name, key, got))
            self.assertIs(type(got[key]), type(value), "%s[%r] = %r" % (name, key, got[key]))

    def test_push_answers_with_the_counts(self):
        wf = io.BytesIO()
        body = bundle([("D", b"dist", b""), ("F", b"dist/a.txt", b"new"), ("F", b"run.sh", b"true\n")])
        receiver.op_push(request("push"), io.BytesIO(body), wf)
        answer, _ = first_line(wf.getvalue())
        self.assertShaped(answer, "pushed")
        self.assertEqual((answer["files"], answer["bytes"]), (2, 8))
        with open(os.path.join(self.home.name, "app/dist/a.txt"), "rb") as f:
            self.assertEqual(f.read(), b"new")
        # --delete kept what the request named.
        self.assertTrue(os.path.exists(os.path.join(self.home.name, "app/dist/old.txt")))

    def test_inventory_answers_with_a_count_then_digests(self):
        wf = io.BytesIO()
        receiver.op_inventory(request("inventory"), wf)
        answer, rest = first_line(wf.getvalue())
        self.assertShaped(answer, "inventoried")
        self.assertEqual(rest, b"\1" + hashlib.sha256(b"abc").digest())

    def test_list_then_read(self):
        manifests, wf = receiver.Manifests(), io.BytesIO()
        receiver.op_list(request("list"), wf, manifests)
        answer, _ = first_line(wf.getvalue())
        self.assertShaped(answer, "listed")
        read = request("read")
        self.assertEqual(read["id"], answer["id"])
        wf = io.BytesIO()
        receiver.op_read(read, wf, manifests)
        answer, _ = first_line(wf.getvalue())
        self.assertShaped(answer, "reading")

    def test_a_refusal_names_its_class(self):
        # A top-level name with a slash: refused whoever runs the receiver (root too).
        push = request("push")
        push["tops"] = [{"name": "612f62", "dir": False}]
        answer = over_a_connection(push, bundle([("F", b"a/b", b"x")]))
        self.assertShaped(answer, "refused")
        self.assertEqual(answer["class"], "protocol")

    def test_export_and_parts_under_run_command(self):
        with FakeS3() as s3:
            def export(put_limit):
                req = request("list")
                req.update(url=s3.url("/put"), headers=[["x-amz-test", "1"]], put_limit=put_limit)
                return receiver.export(req)

            self.assertShaped(export(5 << 30), "exported")
            self.assertTrue(s3.objects["/put"].startswith(b'{"ok": true'))
            kept = export(1)
            self.assertShaped(kept, "exported_kept")
            size = kept["bytes"]
            s3.objects["/plan"] = json.dumps(
                {"part_size": size, "urls": [s3.url("/part1")], "headers": []}
            ).encode()
            done = receiver.parts({"spool": kept["spool"], "url": s3.url("/plan")})
            self.assertShaped(done, "parts_uploaded")
            self.assertEqual(len(s3.objects["/part1"]), size)
        # The fixture's own parts request (no URL) only removes a spool.
        spool = os.path.join(self.home.name, request("parts")["spool"])
        open(spool, "wb").close()
        self.assertTrue(receiver.parts(request("parts"))["ok"])
        self.assertFalse(os.path.exists(spool))


with open(os.path.join(ROOT, "tests", "fixtures", "placement.json"), encoding="utf-8") as _f:
    PLACEMENT = json.load(_f)["rows"]

# The receiver's failure classes as the table names them.
CLASSES = {"usage": "usage", "permission": "write", "space": "write", "write": "write",
           "protocol": "protocol", "integrity": "transfer"}


def build(root, spec):
    """Create one before-state entry: 'p/' a directory, 'p=content', 'p->target'."""
    if "->" in spec:
        path, target = spec.split("->", 1)
        os.makedirs(os.path.dirname(os.path.join(root, path)) or root, exist_ok=True)
        os.symlink(target, os.path.join(root, path))
    elif spec.endswith("/"):
        os.makedirs(os.path.join(root, spec), exist_ok=True)
    else:
        path, content = spec.split("=", 1)
        os.makedirs(os.path.dirname(os.path.join(root, path)) or root, exist_ok=True)
        with open(os.path.join(root, path), "w", encoding="utf-8") as f:
            f.write(content)


def tree(root):
    """Everything under root: paths with their kind and content or target."""
    out = set()
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                out.add((rel, "link", os.readlink(full)))
            elif os.path.isdir(full):
                out.add((rel, "dir", ""))
            else:
                with open(full, "rb") as f:
                    out.add((rel, "file", f.read()))
    return out


def entries(records):
    out = b""
    for r in records:
        path = r[1].encode("utf-8")
        if r[0] == "D":
            out += b"D" + receiver.bytes16(path) + receiver.META.pack(0o40755, 0, 0)
        elif r[0] == "L":
            out += b"L" + receiver.bytes16(path) + receiver.bytes16(r[2].encode("utf-8"))
            out += receiver.META.pack(0o120777, 0, 0)
        else:
            data = r[2].encode("utf-8")
            out += b"F" + receiver.bytes16(path) + receiver.META.pack(0o100644, 0, 0)
            out += receiver.U64.pack(len(data)) + data + hashlib.sha256(data).digest()
    return out + b"E" + receiver.U64.pack(len(records))


class Placement(unittest.TestCase):
    """tests/fixtures/placement.json, upload side: the receiver places bundles."""

    def setUp(self):
        self.home = tempfile.TemporaryDirectory()
        self.saved = (os.environ.get("HOME"), os.getcwd())
        self.root = os.path.join(self.home.name, "root")
        os.makedirs(self.root)
        os.environ["HOME"] = self.root
        os.chdir(self.root)

    def tearDown(self):
        home, cwd = self.saved
        if home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = home
        os.chdir(cwd)
        self.home.cleanup()

    def run_row(self, row):
        for spec in row["before"]:
            build(self.root, spec)
        before = tree(self.root)
        tops = []
        for name in row["sources"]:
            is_dir = any(r[0] == "D" and r[1] == name for r in row["records"])
            tops.append({"name": name.encode("utf-8").hex(), "dir": is_dir})
        req = {"op": "push", "dest": row["dest"].encode("utf-8").hex(), "tops": tops,
               "preserve": False, "atomic": False, "compress": False, "delete": False, "keep": []}
        try:
            receiver.op_push(req, io.BytesIO(entries(row["records"])), io.BytesIO())
            got = "ok"
        except receiver.Failure as f:
            got = CLASSES.get(f.cls, f.cls)
        want = row["expect"] if isinstance(row["expect"], str) else row["expect"]["upload"]
        self.assertEqual(got, want, row["name"])
        if got != "ok":
            self.assertEqual(tree(self.root), before, "%s: the tree changed" % row["name"])
            return
        for spec in row["after"]:
            self.check_after(spec, row["name"])

    def check_after(self, spec, name):
        if spec.startswith("!"):
            self.assertFalse(os.path.lexists(os.path.join(self.root, spec[1:])), name)
        elif "->" in spec:
            path, target = spec.split("->", 1)
            self.assertEqual(os.readlink(os.path.join(self.root, path)), target, name)
        elif spec.endswith("/"):
            self.assertTrue(os.path.isdir(os.path.join(self.root, spec)), name)
        else:
            path, content = spec.split("=", 1)
            full = os.path.join(self.root, path)
            self.assertFalse(os.path.islink(full), "%s: %s is a link" % (name, path))
            with open(full, encoding="utf-8") as f:
                self.assertEqual(f.read(), content, name)

    def test_every_row(self):
        self.assertGreaterEqual(len(PLACEMENT), 40)
        for row in PLACEMENT:
            with self.subTest(row["name"]):
                self.tearDown()
                self.setUp()
                self.run_row(row)


class AtomicSync(unittest.TestCase):
    """--sync --atomic: files left out of the bundle as unchanged are carried into the
    tree that replaces the destination (before this, the swap dropped them)."""

    setUp = Placement.setUp
    tearDown = Placement.tearDown

    def test_unchanged_files_survive_the_swap(self):
        for spec in ["app/keep.js=same", "app/sub/deep.txt=deep", "app/index.html=v1", "app/gone.css=x"]:
            build(self.root, spec)
        req = {"op": "push", "dest": b"app".hex(), "tops": [{"name": b".".hex(), "dir": True}],
               "preserve": False, "atomic": True, "compress": False, "delete": False, "keep": [],
               "unchanged": [b"./keep.js".hex(), b"./sub/deep.txt".hex()]}
        records = [("D", "."), ("D", "./sub"), ("F", "./index.html", "v2")]
        receiver.op_push(req, io.BytesIO(entries(records)), io.BytesIO())
        self.assertEqual(tree(os.path.join(self.root, "app")), {
            ("keep.js", "file", b"same"), ("sub", "dir", ""), ("sub/deep.txt", "file", b"deep"),
            ("index.html", "file", b"v2")})
        self.assertEqual(sorted(os.listdir(self.root)), ["app"], "nothing left beside it")

    def test_a_file_that_vanished_meanwhile_fails_the_copy_and_keeps_the_old_tree(self):
        build(self.root, "app/index.html=v1")
        req = {"op": "push", "dest": b"app".hex(), "tops": [{"name": b".".hex(), "dir": True}],
               "preserve": False, "atomic": True, "compress": False, "delete": False, "keep": [],
               "unchanged": [b"./keep.js".hex()]}
        before = tree(self.root)
        with self.assertRaises(receiver.Failure):
            receiver.op_push(req, io.BytesIO(entries([("D", "."), ("F", "./index.html", "v2")])), io.BytesIO())
        self.assertEqual(tree(self.root), before)


def over_a_connection(req, body):
    """One request through the receiver's connection handling, as a port session
    carries it: the token, the request line, the bundle; the answer line."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    ours = socket.create_connection(listener.getsockname())
    theirs, _ = listener.accept()
    listener.close()
    token = b"0" * 48
    t = threading.Thread(target=receiver.serve, args=(theirs, token, receiver.Manifests(), receiver.Activity()))
    t.daemon = True
    t.start()
    ours.sendall(token + b"\n" + json.dumps(req).encode() + b"\n")
    try:
        ours.sendall(body)
    except OSError:
        pass  # a refusal may close the connection before the bundle is read
    rf = ours.makefile("rb")
    answer = json.loads(rf.readline().decode())
    ours.close()
    return answer


class Listening(unittest.TestCase):
    """The port the client started its port session to, while the receiver started."""

    def test_the_preferred_port_when_it_is_free_and_another_when_it_is_taken(self):
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
        probe.close()
        first = receiver.listen(free)
        try:
            self.assertEqual(first.getsockname(), ("127.0.0.1", free))
            second = receiver.listen(free)  # taken by the first: any other port
            try:
                self.assertNotEqual(second.getsockname()[1], free)
                self.assertNotEqual(second.getsockname()[1], 0)
            finally:
                second.close()
        finally:
            first.close()
        anywhere = receiver.listen(0)
        self.assertNotEqual(anywhere.getsockname()[1], 0)
        anywhere.close()


class FakeS3:
    """Presigned URLs in miniature: GET serves, PUT stores and answers with an ETag."""

    def __init__(self):
        objects = self.objects = {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                objects[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("ETag", '"etag-%s"' % self.path.strip("/"))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                data = objects.get(self.path, b"")
                self.send_response(200 if self.path in objects else 404)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever)
        self.thread.daemon = True

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.server.server_address[1], path)

    def __enter__(self):
        # urllib would send even 127.0.0.1 through a proxy named in the environment.
        self.proxies = {k: os.environ.pop(k) for k in list(os.environ) if k.lower().endswith("_proxy")}
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        os.environ.update(self.proxies)


if __name__ == "__main__":
    unittest.main()
