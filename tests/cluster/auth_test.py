#!/usr/bin/env python3
"""API keys end to end (issue #13): rsd-router --auth and rsd-worker processes on the default
model, driven by rsdctl (gRPC) and the official `openai` client (HTTP). Each refusal has its exact
code and changes nothing: no key, a wrong key, a revoked key, another tenant's key, a tenant key
on Admin, a worker key anywhere but the registry, a worker without a key or under another id.

Usage: auth_test.py BUILD_DIR MODEL
"""
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import openai
from procs import free_port, read, remove_dir, stop, wait_line

BUILD, MODEL = sys.argv[1], sys.argv[2]


class AuthClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="rsd-auth-")
        cls.log = open(os.path.join(cls.dir, "log.txt"), "w")
        cls.procs = []
        cls.data = f"{cls.dir}/router"
        router = subprocess.Popen(
            [f"{BUILD}/router/rsd-router", "--auth", "--listen", "127.0.0.1:0",
             "--http-listen", "127.0.0.1:0", "--data-dir", cls.data],
            stdout=subprocess.PIPE, stderr=cls.log, text=True)
        cls.procs.append(router)
        cls.http = int(wait_line(router, "serving HTTP on").strip().rsplit(":", 1)[1])
        cls.grpc = wait_line(router, "listening on").split()[3]
        cls.admin_file = f"{cls.data}/admin.key"
        worker_key = cls.ctl_json(cls.admin_file, "keys", "create", "--worker")["key"]
        cls.worker_key_file = cls.key_file("worker", worker_key)
        cls.alice = cls.ctl_json(cls.admin_file, "keys", "create", "--tenant", "alice")
        cls.bob = cls.ctl_json(cls.admin_file, "keys", "create", "--tenant", "bob")
        cls.alice_file = cls.key_file("alice", cls.alice["key"])
        cls.bob_file = cls.key_file("bob", cls.bob["key"])
        cls.worker = cls.start_worker("w1", ["--api-key-file", cls.worker_key_file])
        deadline = time.time() + 60
        while time.time() < deadline and not cls.ctl_json(cls.admin_file, "workers")["workers"]:
            time.sleep(0.1)
        assert cls.ctl_json(cls.admin_file, "workers")["workers"], "w1 did not register"

    @classmethod
    def tearDownClass(cls):
        stop(cls.procs)
        cls.log.close()
        remove_dir(cls.dir)

    @classmethod
    def key_file(cls, name, key):
        path = f"{cls.dir}/{name}.key"
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(key + "\n")
        return path

    @classmethod
    def start_worker(cls, wid, flags, env=None):
        p = subprocess.Popen(
            [f"{BUILD}/worker/rsd-worker", "--model", MODEL, "--listen",
             f"127.0.0.1:{free_port()}", "--router", cls.grpc, "--threads", "2",
             "--data-dir", f"{cls.dir}/{wid}", "--id", wid, "--log-format", "json", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env if env is not None else {k: v for k, v in os.environ.items()
                                             if k != "RSD_API_KEY"})
        cls.procs.append(p)
        wait_line(p, "listening on")
        return p

    @classmethod
    def ctl(cls, key_file, *args, env_key=None):
        env = {k: v for k, v in os.environ.items() if k != "RSD_API_KEY"}
        if env_key is not None:
            env["RSD_API_KEY"] = env_key
        flags = ["--api-key-file", key_file] if key_file else []
        return subprocess.run([f"{BUILD}/tools/rsdctl", "--router", cls.grpc, *flags, *args],
                              capture_output=True, text=True, env=env, timeout=120)

    @classmethod
    def ctl_json(cls, key_file, *args):
        r = cls.ctl(key_file, "-o", "json", *args)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def refused(self, r, code):
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"rsdctl: {code}:", r.stderr)
        return r.stderr

    def openai_client(self, key, session=None):
        headers = {"x-rsd-session": session} if session else None
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.http}/v1", api_key=key,
                             max_retries=0, default_headers=headers)

    def test_admin_key_file(self):
        mode = stat.S_IMODE(os.stat(self.admin_file).st_mode)
        self.assertEqual(mode, 0o600)
        roles = [k["role"] for k in self.ctl_json(self.admin_file, "keys", "list")["keys"]]
        self.assertEqual(sorted(roles), ["admin", "tenant", "tenant", "worker"])

    def test_sessions_belong_to_the_key_tenant(self):
        session = self.ctl_json(self.alice_file, "create")
        self.assertEqual(session["tenant"], "alice")
        sid = session["session"]
        turn = self.ctl(self.alice_file, "chat", "--session", sid, "--message", "Hi",
                        "--max-tokens", "4")
        self.assertEqual(turn.returncode, 0, turn.stderr)
        # No key (also not from the environment), a malformed and a well-formed unknown key.
        msg = self.refused(self.ctl(None, "describe", sid, "--tenant", "alice"), "UNAUTHENTICATED")
        self.assertIn("missing API key", msg)
        fake = "rsd_" + "0" * 16 + "_" + "0" * 64
        self.refused(self.ctl(None, "create", env_key=fake), "UNAUTHENTICATED")
        self.refused(self.ctl(None, "create", env_key="hello"), "UNAUTHENTICATED")
        # Bob, even naming alice's tenant: NOT_FOUND with the message of a session never made.
        never = "0123456789abcdef0123456789abcdef"
        none = self.refused(self.ctl(self.bob_file, "--tenant", "bob", "describe", never),
                            "NOT_FOUND")
        for args in (["--tenant", "alice", "describe", sid],
                     ["chat", "--session", sid, "--message", "x", "--max-tokens", "1"],
                     ["--tenant", "bob", "close", sid]):
            got = self.refused(self.ctl(self.bob_file, *args), "NOT_FOUND")
            self.assertEqual(got.replace(sid, never), none)
        described = self.ctl_json(self.alice_file, "--tenant", "alice", "describe", sid)
        self.assertEqual(described["turns"], 1)  # bob's close changed nothing

    def test_tenant_and_worker_keys_are_no_admin(self):
        for key_file in (self.alice_file, self.worker_key_file):
            for args in (["workers"], ["sessions"], ["cordon", "w1"], ["failover", "w1"],
                         ["keys", "create", "--tenant", "alice", "--admin"]):
                msg = self.refused(self.ctl(key_file, *args), "PERMISSION_DENIED")
                self.assertIn("needs an admin key", msg)
        self.refused(self.ctl(self.worker_key_file, "create"), "PERMISSION_DENIED")
        workers = self.ctl_json(self.admin_file, "workers")["workers"]
        self.assertEqual([(w["id"], w["state"]) for w in workers], [("w1", "ready")])
        admins = [k for k in self.ctl_json(self.admin_file, "keys", "list")["keys"]
                  if k["role"] == "admin"]
        self.assertEqual([k["tenant"] for k in admins], ["admin"])  # no admin key was made
        with open(f"{self.data}/audit.log") as f:
            lines = [json.loads(line) for line in f]
        denied = [(x["key"], x["action"]) for x in lines if x["code"] == "PERMISSION_DENIED"]
        self.assertIn((self.alice["id"], "Failover"), denied)
        self.assertIn((self.alice["id"], "CreateKey"), denied)

    def test_revoked_key_stops_at_once(self):
        carol = self.ctl_json(self.admin_file, "keys", "create", "--tenant", "carol")
        carol_file = self.key_file("carol", carol["key"])
        self.assertEqual(self.ctl(carol_file, "models").returncode, 0)
        self.ctl_json(self.admin_file, "keys", "revoke", carol["id"])
        msg = self.refused(self.ctl(carol_file, "models"), "UNAUTHENTICATED")
        self.assertIn(f"revoked API key {carol['id']}", msg)

    def test_workers_need_their_own_key(self):
        cases = [("w-nokey", [], "UNAUTHENTICATED"),
                 ("rogue", ["--api-key-file", self.worker_key_file], "PERMISSION_DENIED"),
                 ("w-tenant", ["--api-key-file", self.alice_file], "PERMISSION_DENIED")]
        for wid, flags, code in cases:
            p = self.start_worker(wid, flags)
            seen = wait_line(p, "router call failed", stream="stderr", seconds=30)
            p.terminate()
            p.wait(timeout=30)
            self.assertIn("router call failed", seen, wid)
            self.assertIn(code, seen, wid)
        ids = [w["id"] for w in self.ctl_json(self.admin_file, "workers")["workers"]]
        self.assertEqual(ids, ["w1"])

    def test_http_api(self):
        client = self.openai_client(self.alice["key"])
        out = client.chat.completions.create(model="", max_tokens=4, messages=[
            {"role": "user", "content": "Hi"}])
        self.assertTrue(out.choices[0].message.content)
        with self.assertRaises(openai.AuthenticationError):
            self.openai_client("rsd_" + "1" * 16 + "_" + "2" * 64).models.list()
        # No Authorization header at all (the openai client always sends one).
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http}/v1/chat/completions", method="POST",
            data=json.dumps({"messages": [{"role": "user", "content": "Hi"}]}).encode(),
            headers={"content-type": "application/json", "x-rsd-tenant": "alice"})
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        self.assertEqual(e.exception.code, 401)
        self.assertEqual(json.loads(e.exception.read())["error"]["type"], "authentication_error")
        worker_key = read(self.worker_key_file).strip()
        with self.assertRaises(openai.PermissionDeniedError):
            self.openai_client(worker_key).models.list()
        kept = self.openai_client(self.alice["key"], session="new")
        kept = kept.chat.completions.with_raw_response.create(
            model="", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
        sid = kept.headers["x-rsd-session"]
        with self.assertRaises(openai.NotFoundError):
            self.openai_client(self.bob["key"], session=sid).chat.completions.create(
                model="", max_tokens=1, messages=[{"role": "user", "content": "Hi"}])
        # Probes and scrapes stay open.
        for path in ("/health", "/metrics"):
            self.assertEqual(urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}").status,
                             200)

    def test_no_secret_in_logs(self):
        secrets = [self.alice["key"][21:], self.bob["key"][21:], read(self.admin_file).strip()[21:]]
        for path in (os.path.join(self.dir, "log.txt"), f"{self.data}/audit.log"):
            text = read(path)
            for s in secrets:
                self.assertNotIn(s, text)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
