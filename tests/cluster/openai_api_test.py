#!/usr/bin/env python3
"""The router's OpenAI-compatible HTTP API and both processes' /metrics, against a real router and
worker on the default model, driven by the official `openai` client and parsed with
`prometheus_client`'s text parser (both from PyPI, in the venv tools/pyenv.sh makes).

The reference for multi-turn sessions is `rsd-run chat` (the engine in one process, no network).
Usage: openai_api_test.py BUILD_DIR MODEL
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families
from procs import free_port, remove_dir, stop, wait_line

BUILD, MODEL = sys.argv[1], sys.argv[2]
MAX_TOKENS = 24


def start(args, ready, log):
    """Starts a process and waits for the line containing `ready` on its stdout; returns both."""
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
    return p, wait_line(p, ready)


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def sample(values, name, **labels):
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


class Cluster:
    """rsd-router with its HTTP port and, unless `workers` is 0, one rsd-worker on MODEL."""

    def __init__(self, workers=1, worker_flags=()):
        self.dir = tempfile.mkdtemp(prefix="rsd-openai-")
        self.log = open(os.path.join(self.dir, "log.txt"), "w")
        self.procs = []
        # --data-dir with missing parents: they are created.
        router, line = start([f"{BUILD}/router/rsd-router", "--listen", "127.0.0.1:0",
                              "--http-listen", "127.0.0.1:0",
                              "--data-dir", f"{self.dir}/a/b/journal"], "serving HTTP on", self.log)
        self.procs.append(router)
        self.http = int(line.strip().rsplit(":", 1)[1])
        line = wait_line(router, "listening on")
        self.grpc = line.split()[3]
        self.worker_http = None
        if workers:
            worker, line = start([f"{BUILD}/worker/rsd-worker", "--model", MODEL,
                                  "--listen", f"127.0.0.1:{free_port()}", "--router", self.grpc,
                                  "--http-listen", "127.0.0.1:0", "--threads", "2",
                                  "--data-dir", f"{self.dir}/w1/db", "--id", "w1",
                                  *worker_flags],
                                 "serving HTTP on port", self.log)
            self.procs.append(worker)
            self.worker_http = int(line.split()[-1])
            deadline = time.time() + 60
            while not self.models() and time.time() < deadline:
                time.sleep(0.1)
            assert self.models(), "the worker did not register"
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{self.http}/v1", api_key="none",
                                    max_retries=0)

    def models(self):
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v1/models").read()
        return [m["id"] for m in json.loads(body)["data"]]

    def close(self):
        stop(self.procs)
        self.log.close()
        remove_dir(self.dir)


def rsd_run_chat(messages, max_tokens):
    """The texts `rsd-run chat` answers the user messages with (greedy), turn by turn."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for m in messages:
            f.write(json.dumps({"role": "user", "content": m}) + "\n")
    try:
        out = subprocess.run([f"{BUILD}/tools/rsd-run", "chat", "--model", MODEL, "--script",
                              f.name, "--max-tokens", str(max_tokens), "--threads", "2"],
                             check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    return [json.loads(line)["text"] for line in out.splitlines() if line.startswith("{")]


def user(text):
    return [{"role": "user", "content": text}]


class OpenAiApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = Cluster()
        cls.client = cls.c.client
        cls.model = cls.c.models()[0]
        cls.turns = ["What is the capital of France?", "And of Italy?", "Which is bigger?"]
        cls.reference = rsd_run_chat(cls.turns, MAX_TOKENS)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def chat(self, messages, **kw):
        kw.setdefault("max_tokens", MAX_TOKENS)
        return self.client.chat.completions.create(model=self.model, messages=messages,
                                                   temperature=0, **kw)

    def test_models_lists_the_workers_model(self):
        self.assertEqual([m.id for m in self.client.models.list().data], [self.model])

    def test_stateless_answer_equals_the_engine_and_streaming_equals_whole(self):
        whole = self.chat(user(self.turns[0]))
        self.assertEqual(whole.choices[0].message.content, self.reference[0])
        self.assertEqual(whole.choices[0].message.role, "assistant")
        self.assertIn(whole.choices[0].finish_reason, ("stop", "length"))
        self.assertGreater(whole.usage.prompt_tokens, 0)
        self.assertEqual(whole.usage.total_tokens,
                         whole.usage.prompt_tokens + whole.usage.completion_tokens)
        chunks = list(self.chat(user(self.turns[0]), stream=True,
                                stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, self.reference[0])
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        finish = [c.choices[0].finish_reason for c in chunks if c.choices]
        self.assertEqual(finish[-1], whole.choices[0].finish_reason)
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, whole.usage.completion_tokens)
        self.assertEqual(chunks[-1].usage.prompt_tokens, whole.usage.prompt_tokens)

    def test_a_session_over_three_requests_equals_rsd_run_chat(self):
        raw = self.client.chat.completions.with_raw_response.create(
            model=self.model, messages=user(self.turns[0]), temperature=0,
            max_tokens=MAX_TOKENS, extra_headers={"x-rsd-session": "new"})
        session = raw.headers["x-rsd-session"]
        self.assertEqual(len(session), 32)
        answers = [raw.parse().choices[0].message.content]
        cached = []
        for t in self.turns[1:]:
            r = self.chat(user(t), extra_headers={"x-rsd-session": session})
            answers.append(r.choices[0].message.content)
            cached.append(r.usage.prompt_tokens_details.cached_tokens)
        self.assertEqual(answers, self.reference)
        self.assertGreater(cached[0], 0)         # the history was read from the session's state
        self.assertGreater(cached[1], cached[0])

    def test_a_shared_system_prompt_is_reused_with_the_same_answer(self):
        system = {"role": "system", "content": " ".join(
            f"Rule {i}: answer in one short sentence and never mention rule {i + 1}."
            for i in range(12))}
        ask = [system, {"role": "user", "content": "Name a red fruit."}]
        first = self.chat(ask)  # nobody holds this prompt yet
        self.assertEqual(first.usage.prompt_tokens_details.cached_tokens, 0)
        # A stateless request's session is closed after it, but its prompt's blocks stay as a
        # donor (a kept prefix): the next request with that system prompt starts from them.
        other = self.chat([system, {"role": "user", "content": "Name a yellow fruit."}])
        self.assertGreaterEqual(other.usage.prompt_tokens_details.cached_tokens, 64)
        def keep(question):  # a session that keeps the prompt's state
            raw = self.client.chat.completions.with_raw_response.create(
                model=self.model, temperature=0, max_tokens=MAX_TOKENS,
                messages=[system, {"role": "user", "content": question}],
                extra_headers={"x-rsd-session": "new"})
            return raw.headers["x-rsd-session"]
        keep("Name a blue fruit.")
        again = self.chat(ask)
        # The system prompt's state came from that session (prefix reuse): reported as cached,
        # and the answer is the same bits.
        self.assertGreaterEqual(again.usage.prompt_tokens_details.cached_tokens, 64)
        self.assertEqual(again.usage.prompt_tokens, first.usage.prompt_tokens)
        self.assertEqual(again.choices[0].message.content, first.choices[0].message.content)
        # A second kept session holds the prompt's blocks shared with the first: rsdctl shows
        # them per session and per worker, and the worker's /metrics what sharing saves.
        placed = sample(scrape(self.c.http), "rsd_router_placements_total", prefix="matched")
        second = keep("Name a green fruit.")
        # Placed where its prompt's state was (the only worker here, but the router saw it).
        self.assertEqual(sample(scrape(self.c.http), "rsd_router_placements_total",
                                prefix="matched"), placed + 1)
        ctl = [f"{BUILD}/tools/rsdctl", "--router", self.c.grpc, "-o", "json"]
        described = json.loads(subprocess.check_output(ctl + ["describe", second]))
        self.assertGreaterEqual(described["shared_blocks"] * 16, 64)
        self.assertGreater(described["blocks"], described["shared_blocks"])
        # The router sees a worker's load with its next heartbeat: wait for one that counts this
        # session's shared blocks (kept prefixes of earlier requests may share blocks already).
        want = described["shared_blocks"] * described["bytes"]["hot"] // described["blocks"]
        deadline = time.time() + 15
        while True:
            workers = json.loads(subprocess.check_output(ctl + ["workers"]))["workers"]
            shared = sum(w["shared_bytes"] for w in workers)
            if shared >= want or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertGreaterEqual(shared, want)
        self.assertGreater(sum(w["saved_bytes"] for w in workers), 0)
        self.assertGreater(sample(scrape(self.c.worker_http), "rsd_worker_state_bytes",
                                  tier="hot", kind="saved"), 0)

    def test_history_sent_along_equals_the_session_that_lived_it(self):
        history = [{"role": "user", "content": self.turns[0]},
                   {"role": "assistant", "content": self.reference[0]},
                   {"role": "user", "content": self.turns[1]}]
        r = self.chat(history)
        # A whole-history request retokenizes the first answer; the engine's session kept the
        # generated tokens. Both are the same text here, so the second answer is the same.
        self.assertEqual(r.choices[0].message.content, self.reference[1])

    def test_stop_strings_are_not_in_the_answer(self):
        ref = self.reference[0]
        stop = ref.split()[1] if len(ref.split()) > 1 else ref[-2:]
        r = self.chat(user(self.turns[0]), stop=[stop])
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertEqual(r.choices[0].message.content, ref[:ref.find(stop)])
        chunks = list(self.chat(user(self.turns[0]), stop=[stop], stream=True))
        self.assertEqual("".join(c.choices[0].delta.content or "" for c in chunks),
                         ref[:ref.find(stop)])

    def test_a_seed_reproduces_a_sampled_answer(self):
        def sampled(seed):
            return self.client.chat.completions.create(
                model=self.model, messages=user(self.turns[0]), temperature=1.0, top_p=0.95,
                seed=seed, max_tokens=16).choices[0].message.content
        big = 2**63 + 12345  # a 64-bit seed is taken as an integer
        self.assertEqual(sampled(big), sampled(big))
        self.assertEqual(sampled(-7), sampled(-7))
        with self.assertRaises(openai.BadRequestError):
            sampled(1.5)

    def test_completions_take_a_raw_prompt(self):
        r = self.client.completions.create(model=self.model, prompt="The capital of France is",
                                           max_tokens=8, temperature=0)
        self.assertEqual(r.object, "text_completion")
        self.assertEqual(r.usage.completion_tokens, 8)
        self.assertTrue(r.choices[0].text)

    def test_each_error_has_openais_shape_and_code(self):
        with self.assertRaises(openai.NotFoundError) as e:
            self.client.chat.completions.create(model="no-such-model", messages=user("hi"))
        self.assertEqual(e.exception.body["type"], "not_found_error")
        self.assertIn("no-such-model", e.exception.body["message"])
        with self.assertRaises(openai.BadRequestError) as e:
            self.chat(user("hi"), n=2)
        self.assertIn("'n'", e.exception.body["message"])
        with self.assertRaises(openai.BadRequestError):
            self.chat([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
        with self.assertRaises(openai.BadRequestError) as e:
            self.chat(user("hi"), max_tokens=100000)
        self.assertIn("context", e.exception.body["message"])
        with self.assertRaises(openai.NotFoundError):
            self.chat(user("hi"), extra_headers={"x-rsd-session": "0" * 32})
        req = urllib.request.Request(f"http://127.0.0.1:{self.c.http}/v1/chat/completions",
                                     data=b"{not json", method="POST")
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        self.assertEqual(e.exception.code, 400)
        self.assertEqual(json.loads(e.exception.read())["error"]["type"], "invalid_request_error")

    def test_no_worker_is_503_with_retry_after(self):
        empty = Cluster(workers=0)
        try:
            with self.assertRaises(openai.APIStatusError) as e:
                empty.client.chat.completions.create(model="", messages=user("hi"))
            self.assertEqual(e.exception.status_code, 503)
            self.assertEqual(e.exception.response.headers["retry-after"], "1")
        finally:
            empty.close()

    def test_a_full_queue_is_429_with_retry_after(self):
        small = Cluster(worker_flags=("--max-running", "1", "--max-queue", "1"))
        try:
            import concurrent.futures
            def one(i):
                try:
                    small.client.chat.completions.create(
                        model="", messages=user(f"Count to {i}"), max_tokens=48)
                    return None
                except openai.APIStatusError as e:
                    return e
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                errors = [e for e in pool.map(one, range(8)) if e is not None]
            self.assertTrue(errors, "8 concurrent turns against room for 2: none refused")
            for e in errors:
                self.assertEqual(e.status_code, 429)
                self.assertEqual(e.body["type"], "rate_limit_error")
                self.assertEqual(e.response.headers["retry-after"], "1")
        finally:
            small.close()

    def test_spills_and_restores_are_counted_by_form_and_source(self):
        # A 10-block hot pool (SmolLM2: 23,040 B of F16 K/V a token, 16 tokens a block) holds about
        # two of these sessions: the third turn spills one, the second round restores them.
        small = Cluster(worker_flags=("--hot-bytes", str(10 * 16 * 23040)))
        try:
            before = scrape(small.worker_http)
            sessions = []
            for i in range(3):
                raw = small.client.chat.completions.with_raw_response.create(
                    model="", messages=user(f"Tell me about the number {i}."), max_tokens=24,
                    extra_headers={"x-rsd-session": "new"})
                sessions.append(raw.headers["x-rsd-session"])
            for sid in sessions:
                small.client.chat.completions.create(
                    model="", messages=user("And then?"), max_tokens=8,
                    extra_headers={"x-rsd-session": sid})
            after = scrape(small.worker_http)
        finally:
            small.close()

        def moved(name, **labels):
            return sample(after, name, **labels) - sample(before, name, **labels)

        spills = sum(moved("rsd_worker_state_moves_total", op="spill", form=f)
                     for f in ("auto", "kv", "residual", "tokens"))
        restores = sum(moved("rsd_worker_state_moves_total", op="restore", form=f)
                       for f in ("warm", "cold", "tokens"))
        self.assertGreater(spills, 0)
        self.assertGreater(restores, 0)
        self.assertGreater(moved("rsd_worker_state_move_bytes_total", op="spill", form="auto"), 0)
        self.assertGreater(moved("rsd_worker_state_move_bytes_total", op="restore", form="warm"), 0)
        # Each restore is also a turn whose state came from that tier.
        self.assertEqual(moved("rsd_worker_state_moves_total", op="restore", form="warm"),
                         moved("rsd_worker_turn_restores_total", source="warm"))
        self.assertEqual(moved("rsd_worker_spills_total"), spills)

    def test_a_client_that_disconnects_mid_stream_rolls_the_turn_back(self):
        def new_session():
            raw = self.client.chat.completions.with_raw_response.create(
                model=self.model, messages=user(self.turns[0]), temperature=0,
                max_tokens=MAX_TOKENS, extra_headers={"x-rsd-session": "new"})
            return raw.headers["x-rsd-session"]
        cut, whole = new_session(), new_session()
        stream = self.chat(user("Tell me a very long story about a dragon."), max_tokens=400,
                           stream=True, extra_headers={"x-rsd-session": cut})
        for i, _ in enumerate(stream):
            if i == 3:
                break
        stream.close()
        time.sleep(1.0)  # the router notices at its next write and the worker rolls back
        a = self.chat(user(self.turns[1]), extra_headers={"x-rsd-session": cut})
        b = self.chat(user(self.turns[1]), extra_headers={"x-rsd-session": whole})
        self.assertEqual(a.usage.prompt_tokens_details.cached_tokens,
                         b.usage.prompt_tokens_details.cached_tokens)
        self.assertEqual(a.choices[0].message.content, b.choices[0].message.content)
        m = scrape(self.c.http)
        self.assertGreaterEqual(sample(m, "rsd_router_turns_total", code="CANCELLED"), 1)

    def test_metrics_move_by_the_traffic(self):
        before_r, before_w = scrape(self.c.http), scrape(self.c.worker_http)
        tokens = 0
        for t in self.turns:
            tokens += self.chat(user(t), max_tokens=5).usage.completion_tokens
        after_r, after_w = scrape(self.c.http), scrape(self.c.worker_http)

        def moved(before, after, name, **labels):
            return sample(after, name, **labels) - sample(before, name, **labels)

        self.assertEqual(moved(before_r, after_r, "rsd_router_requests_total", api="http",
                               method="/v1/chat/completions", code="OK"), 3)
        self.assertEqual(moved(before_r, after_r, "rsd_router_generation_tokens_total"), tokens)
        self.assertEqual(moved(before_r, after_r, "rsd_router_time_to_first_token_seconds_count"), 3)
        self.assertEqual(moved(before_r, after_r, "rsd_router_inter_token_latency_seconds_count"),
                         tokens - 3)
        self.assertEqual(moved(before_w, after_w, "rsd_worker_generation_tokens_total"), tokens)
        self.assertEqual(moved(before_w, after_w, "rsd_worker_turns_committed_total"), 3)
        # A first turn starts "new", or from another session's state for a shared prompt start
        # (prefix reuse, "prefix").
        self.assertEqual(
            moved(before_w, after_w, "rsd_worker_turn_restores_total", source="new") +
            moved(before_w, after_w, "rsd_worker_turn_restores_total", source="prefix"), 3)
        self.assertGreater(sample(after_w, "rsd_worker_state_bytes", tier="hot", kind="capacity"), 0)
        self.assertGreater(sample(after_w, "rsd_worker_rebuild_tokens_per_second", form="tokens"),
                           0)
        self.assertEqual(sample(after_r, "rsd_router_workers", state="ready"), 1)
        health = urllib.request.urlopen(f"http://127.0.0.1:{self.c.worker_http}/health")
        self.assertEqual(health.status, 200)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
