#!/usr/bin/env python3
"""TLS and mutual TLS end to end (issue #13), with a throwaway CA made by the openssl CLI at run
time (tests/support/make_certs.sh): rsd-router serving TLS on gRPC and HTTPS, rsd-worker on mutual
TLS, driven by rsdctl, the official `openai` client and `grpcio` (a gRPC client that is not ours).

Each refusal has its exact code and changes nothing: a plaintext client against a TLS port, a
client trusting another CA, a worker with a certificate for another id or from another CA, a
direct call to a worker's Worker service from a client without a cluster certificate, or with one
the same CA signed for a name that is not the router's or a peer worker's (--tls-peers).
Certificate files replaced on disk are served without a restart.

Usage: tls_test.py SOURCE_DIR BUILD_DIR MODEL
"""
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import grpc
import openai
from procs import free_port, read, remove_dir, stop, wait_line

SOURCE, BUILD, MODEL = sys.argv[1], sys.argv[2], sys.argv[3]


class TlsClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="rsd-tls-")
        cls.certs = f"{cls.dir}/certs"
        subprocess.run([f"{SOURCE}/tests/support/make_certs.sh", cls.certs, "router", "w1", "w2",
                        "tenant", "other-ca/w3", "other-ca/router"], check=True)
        cls.log = open(os.path.join(cls.dir, "log.txt"), "w")
        cls.procs = []
        cls.router, cls.grpc, cls.https = cls.start_router("r", "router")
        cls.w1 = cls.start_worker("w1", "w1")
        deadline = time.time() + 60
        while time.time() < deadline and not cls.workers():
            time.sleep(0.1)
        assert cls.workers() == [("w1", "ready")], cls.workers()

    @classmethod
    def tearDownClass(cls):
        stop(cls.procs)
        cls.log.close()
        remove_dir(cls.dir)

    @classmethod
    def cert(cls, name):
        return [f"{cls.certs}/{name}.pem", f"{cls.certs}/{name}.key"]

    @classmethod
    def start_router(cls, data, cert, ca=True):
        cert_pem, key_pem = cls.cert(cert)
        args = [f"{BUILD}/router/rsd-router", "--listen", "127.0.0.1:0", "--http-listen",
                "127.0.0.1:0", "--data-dir", f"{cls.dir}/{data}", "--tls-cert", cert_pem,
                "--tls-key", key_pem]
        if ca:
            args += ["--tls-ca", f"{cls.certs}/ca.pem"]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=cls.log, text=True)
        cls.procs.append(p)
        https = int(wait_line(p, "serving HTTPS on").strip().rsplit(":", 1)[1])
        line = wait_line(p, "listening on")
        assert "mutual TLS" in line or not ca, line
        return p, line.split()[3], https

    @classmethod
    def start_worker(cls, wid, cert, ca=None):
        cert_pem, key_pem = cls.cert(cert)
        p = subprocess.Popen(
            [f"{BUILD}/worker/rsd-worker", "--model", MODEL, "--listen",
             f"127.0.0.1:{free_port()}", "--router", cls.grpc, "--threads", "2",
             "--data-dir", f"{cls.dir}/{wid}", "--id", wid, "--tls-cert", cert_pem,
             "--tls-key", key_pem, "--tls-ca", ca or f"{cls.certs}/ca.pem",
             "--tls-peers", "router, *.peers.test, w1,w2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cls.procs.append(p)
        wait_line(p, "listening on")
        return p

    @classmethod
    def ctl(cls, *args, ca="ca.pem", router=None):
        flags = ["--tls-ca", f"{cls.certs}/{ca}"] if ca else []
        return subprocess.run([f"{BUILD}/tools/rsdctl", "--router", router or cls.grpc, *flags,
                               *args], capture_output=True, text=True, timeout=120)

    @classmethod
    def workers(cls):
        r = cls.ctl("-o", "json", "workers")
        assert r.returncode == 0, r.stderr
        return [(w["id"], w["state"]) for w in json.loads(r.stdout)["workers"]]

    def test_rsdctl_over_tls_reaches_a_worker_over_mutual_tls(self):
        r = self.ctl("-o", "json", "create")
        self.assertEqual(r.returncode, 0, r.stderr)
        sid = json.loads(r.stdout)["session"]
        r = self.ctl("chat", "--session", sid, "--message", "Hi", "--max-tokens", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.strip())

    def test_plaintext_and_untrusting_clients_are_refused(self):
        for ca in (None, "other-ca/ca.pem"):
            r = self.ctl("workers", ca=ca)
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn("rsdctl: UNAVAILABLE:", r.stderr)
        with self.assertRaises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{self.https}/v1/models", timeout=10)
        self.assertEqual(self.workers(), [("w1", "ready")])

    def test_https_with_the_openai_client(self):
        ca = f"{self.certs}/ca.pem"
        client = openai.OpenAI(
            base_url=f"https://127.0.0.1:{self.https}/v1", api_key="none", max_retries=0,
            http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca)))
        out = client.chat.completions.create(model="", max_tokens=4, messages=[
            {"role": "user", "content": "Hi"}])
        self.assertTrue(out.choices[0].message.content)
        untrusting = openai.OpenAI(
            base_url=f"https://127.0.0.1:{self.https}/v1", api_key="none", max_retries=0,
            http_client=openai.DefaultHttpxClient(
                verify=ssl.create_default_context(cafile=f"{self.certs}/other-ca/ca.pem")))
        with self.assertRaises(openai.APIConnectionError):
            untrusting.models.list()

    def test_workers_must_prove_their_id(self):
        # w9 holding w2's certificate (another id), w3 with a certificate of another CA.
        for wid, cert, ca, code in (("w9", "w2", None, "PERMISSION_DENIED"),
                                    ("w3", "other-ca/w3", f"{self.certs}/other-ca/ca.pem",
                                     "UNAVAILABLE")):
            p = self.start_worker(wid, cert, ca)
            seen = wait_line(p, "router call failed", stream="stderr", seconds=30)
            p.terminate()
            p.wait(timeout=30)
            self.assertIn("router call failed", seen, wid)
            self.assertIn(code, seen, wid)
            if code == "PERMISSION_DENIED":
                self.assertIn("worker 'w9' must present a certificate naming it", seen)
        self.assertEqual(self.workers(), [("w1", "ready")])

    def test_a_worker_answers_only_cluster_certificates(self):
        r = self.ctl("-o", "json", "workers")
        address = json.loads(r.stdout)["workers"][0]["address"]
        ca = read(f"{self.certs}/ca.pem", "rb")
        method = "/rsd.v1.Worker/DescribeSession"

        def call(channel):
            with channel:
                stub = channel.unary_unary(method)
                try:
                    stub(b"", timeout=10)
                    return grpc.StatusCode.OK
                except grpc.RpcError as e:
                    return e.code()

        self.assertEqual(call(grpc.insecure_channel(address)), grpc.StatusCode.UNAVAILABLE)
        no_cert = grpc.ssl_channel_credentials(root_certificates=ca)
        self.assertEqual(call(grpc.secure_channel(address, no_cert)),
                         grpc.StatusCode.UNAVAILABLE)
        other = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=read(f"{self.certs}/other-ca/w3.key", "rb"),
            certificate_chain=read(f"{self.certs}/other-ca/w3.pem", "rb"))
        self.assertEqual(call(grpc.secure_channel(address, other)), grpc.StatusCode.UNAVAILABLE)
        # With the router's or a peer worker's certificate the call reaches the service (which
        # refuses the empty ref); one the same CA signed for anyone else (--tls-peers) does not.
        for name, code in (("router", grpc.StatusCode.INVALID_ARGUMENT),
                           ("w2", grpc.StatusCode.INVALID_ARGUMENT),
                           ("tenant", grpc.StatusCode.PERMISSION_DENIED)):
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=read(f"{self.certs}/{name}.key", "rb"),
                certificate_chain=read(f"{self.certs}/{name}.pem", "rb"))
            self.assertEqual(call(grpc.secure_channel(address, creds)), code, name)
        with grpc.secure_channel(address, creds) as channel:
            with self.assertRaises(grpc.RpcError) as refused:
                channel.unary_unary("/rsd.v1.Worker/ListSessions")(b"", timeout=10)
        self.assertIn("worker 'w1' answers only the router and peer workers: a certificate "
                      "naming [", refused.exception.details())
        self.assertIn("tenant", refused.exception.details())

    def test_certificates_reload_without_restart(self):
        live = f"{self.dir}/live"
        os.makedirs(live)
        for ext in ("pem", "key"):
            shutil.copy(f"{self.certs}/router.{ext}", f"{live}/router.{ext}")
        p = subprocess.Popen(
            [f"{BUILD}/router/rsd-router", "--listen", "127.0.0.1:0", "--http-listen",
             "127.0.0.1:0", "--data-dir", f"{self.dir}/reload", "--tls-cert",
             f"{live}/router.pem", "--tls-key", f"{live}/router.key"],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.procs.append(p)
        https = int(wait_line(p, "serving HTTPS on").strip().rsplit(":", 1)[1])
        address = wait_line(p, "listening on").split()[3]
        self.assertEqual(self.ctl("models", router=address).returncode, 0)
        # The certificate of another CA replaces the files (the key first, then the chain).
        for ext in ("key", "pem"):
            shutil.copy(f"{self.certs}/other-ca/router.{ext}", f"{live}/tmp.{ext}")
            os.replace(f"{live}/tmp.{ext}", f"{live}/router.{ext}")
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.ctl("models", router=address, ca="other-ca/ca.pem").returncode == 0:
                break
            time.sleep(0.5)
        self.assertEqual(self.ctl("models", router=address, ca="other-ca/ca.pem").returncode, 0)
        self.assertEqual(self.ctl("models", router=address).returncode, 1)
        ctx = ssl.create_default_context(cafile=f"{self.certs}/other-ca/ca.pem")
        body = urllib.request.urlopen(f"https://127.0.0.1:{https}/health", context=ctx).read()
        self.assertIn(b"ok", body)
        p.terminate()
        p.wait(timeout=30)

    def test_bad_flags_are_refused_at_start(self):
        cert, key = self.cert("router")
        w_cert, w_key = self.cert("w1")
        cases = [
            ([f"{BUILD}/router/rsd-router", "--data-dir", f"{self.dir}/bad", "--tls-cert", cert],
             "--tls-cert and --tls-key go together"),
            ([f"{BUILD}/router/rsd-router", "--data-dir", f"{self.dir}/bad", "--tls-cert", cert,
              "--tls-key", w_key], f"--tls-key {w_key}: does not match --tls-cert {cert}"),
            ([f"{BUILD}/router/rsd-router", "--data-dir", f"{self.dir}/bad", "--tls-cert", key,
              "--tls-key", key], f"--tls-cert {key}: holds no PEM certificate"),
            ([f"{BUILD}/worker/rsd-worker", "--model", MODEL, "--data-dir", f"{self.dir}/bad",
              "--tls-cert", w_cert, "--tls-key", w_key], "--tls-cert on a worker needs --tls-ca"),
            ([f"{BUILD}/worker/rsd-worker", "--model", MODEL, "--data-dir", f"{self.dir}/bad",
              "--tls-peers", "router"], "--tls-peers needs --tls-cert, --tls-key and --tls-ca"),
            ([f"{BUILD}/worker/rsd-worker", "--model", MODEL, "--data-dir", f"{self.dir}/bad",
              "--tls-cert", w_cert, "--tls-key", w_key, "--tls-ca", f"{self.certs}/ca.pem",
              "--tls-peers", "router,w*"], "--tls-peers: 'w*' (a wildcard only as a whole "
             "leading label: '*.domain')"),
        ]
        for args, message in cases:
            r = subprocess.run(args, capture_output=True, text=True, timeout=60)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertIn(message, r.stderr + r.stdout)
        # With TLS a router may listen on any address without --insecure-listen.
        p = subprocess.Popen([f"{BUILD}/router/rsd-router", "--listen", "0.0.0.0:0",
                              "--data-dir", f"{self.dir}/any", "--tls-cert", cert,
                              "--tls-key", key], stdout=subprocess.PIPE, stderr=self.log,
                             text=True)
        self.procs.append(p)
        self.assertIn("(TLS,", wait_line(p, "listening on"))
        p.terminate()
        p.wait(timeout=30)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
