#!/usr/bin/env python3
"""`hearth serve` command line: --help, usage errors (exit 2), load errors
(exit 1 with one clear line), a port already in use, HEARTH_API_KEY from the
environment, --chat-template FILE overriding the tokenizer's template, and
SIGINT -> exit 0. Loopback only; each step bounded in time."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests

BIN = os.environ.get("HEARTH_BIN", "")
FIX = os.environ.get("HEARTH_FIXTURES", os.path.join(os.path.dirname(__file__), "../../../shared/fixtures"))
MODEL = os.path.join(FIX, "models", "tiny-llama")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr, flush=True)


def run(*args, env=None):
    return subprocess.run([BIN, "serve", *args], capture_output=True, text=True, timeout=60, env=env)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args, env=None):
    port = free_port()
    p = subprocess.Popen([BIN, "serve", MODEL, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                          "--kv-cache-memory", "2M", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env)
    lines = []
    ready = threading.Event()

    def reader():
        for line in p.stdout:
            lines.append(line)
            if "Application startup complete" in line:
                ready.set()

    threading.Thread(target=reader, daemon=True).start()
    if not ready.wait(120):
        p.kill()
        raise RuntimeError("no ready line: " + "".join(lines)[-2000:])
    return p, port, lines


def main():
    if not BIN or not os.access(BIN, os.X_OK):
        print("SKIP: HEARTH_BIN not built", file=sys.stderr)
        sys.exit(77)
    r = run("--help")
    if "not available in this build" in r.stderr:
        print("SKIP: serve not built", file=sys.stderr)
        sys.exit(77)
    check(r.returncode == 0 and "--max-num-batched-tokens" in r.stdout, f"--help: {r.returncode}")
    r = run(MODEL, "--no-such-flag", "1")
    check(r.returncode == 2 and "unknown option" in r.stderr, f"bad flag: {r.returncode} {r.stderr}")
    r = run(MODEL, "--tensor-parallel-size", "2")
    check(r.returncode == 2 and "not supported" in r.stderr, f"tp=2: {r.returncode} {r.stderr}")
    r = run(MODEL, "--port", "99999")
    check(r.returncode == 2, f"bad port: {r.returncode}")
    r = run(MODEL, "--port")
    check(r.returncode == 2, f"missing value: {r.returncode}")
    r = run()
    check(r.returncode == 2, f"no model: {r.returncode}")
    r = run(os.path.join(FIX, "models", "no-such-model"), "--device", "cpu", "--host", "127.0.0.1", "--port", "0")
    check(r.returncode == 1 and "hearth serve:" in r.stderr, f"missing model: {r.returncode} {r.stderr[-300:]}")
    r = run(MODEL, "--device", "cpu", "--host", "127.0.0.1", "--chat-template", "/no/such/file")
    check(r.returncode == 1 and "/no/such/file" in r.stderr, f"missing template: {r.returncode} {r.stderr[-300:]}")

    # a port already taken
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        taken = s.getsockname()[1]
        r = run(MODEL, "--device", "cpu", "--host", "127.0.0.1", "--port", str(taken), "--kv-cache-memory", "2M")
        check(r.returncode == 1 and "cannot listen" in r.stderr, f"port in use: {r.returncode} {r.stderr[-300:]}")

    # HEARTH_API_KEY and --chat-template
    with tempfile.NamedTemporaryFile("w", suffix=".jinja", delete=False) as f:
        f.write("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}[assistant] {% endif %}")
        tmpl = f.name
    env = dict(os.environ, HEARTH_API_KEY="env-key")
    p, port, lines = start("--chat-template", tmpl, "--dtype", "auto", "--trust-remote-code",
                           "--disable-uvicorn-access-log", env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        check(requests.get(url + "/v1/models", timeout=30).status_code == 401, "env key not enforced")
        h = {"Authorization": "Bearer env-key"}
        check(requests.get(url + "/v1/models", headers=h, timeout=30).status_code == 200, "env key rejected")
        tk = requests.post(url + "/tokenize", headers=h, timeout=30, json={
            "messages": [{"role": "user", "content": "hi"}], "return_token_strs": True}).json()
        dt = requests.post(url + "/detokenize", headers=h, timeout=30, json={"tokens": tk["tokens"]}).json()
        check(dt["prompt"] == "[user] hi\n[assistant] ", f"custom template: {dt}")
        r = requests.post(url + "/v1/chat/completions", headers=h, timeout=60, json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
        check(r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == tk["count"], f"chat: {r.text[:200]}")
        check(requests.get(url + "/version", headers=h, timeout=30).json().get("version"), "version")
    finally:
        p.send_signal(signal.SIGINT)
        try:
            code = p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            code = None
        os.unlink(tmpl)
    check(code == 0, f"SIGINT exit code {code}: {''.join(lines)[-500:]}")
    check(not any('HTTP/1.1"' in l for l in lines), "access log printed despite --disable-uvicorn-access-log")
    print(f"e2e/test_serve_cli: {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
