#!/usr/bin/env python3
"""The built-in chat page (GET /): served by the real `hearth serve` on a
loopback port with the fixture model. Checks the HTTP side (status, headers,
ETag/304, HEAD, /index.html, auth with --api-key: Bearer or Basic for the page
only, WWW-Authenticate), the page (the element ids its script uses, no
external resources, ASCII), that its script parses (`node --check`), and then
runs the page's own client code in node against the server: escaping and the
markdown subset, the SSE parser on arbitrary splits, a streamed chat whose
text equals the non-streamed greedy answer with usage and timings, the stop
button's abort (the server counts an aborted request), and error objects.
The node parts are skipped when node is missing."""
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests

BIN = os.environ.get("HEARTH_BIN", "")
SRC = os.environ.get("HEARTH_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
FIX = os.environ.get("HEARTH_FIXTURES", os.path.join(SRC, "../shared/fixtures"))
MODEL = os.path.join(FIX, "models", "tiny-llama")
KEY = "ui-test-key"
failures = []

# ids the page's script looks up with getElementById
IDS = ["model", "messages", "log", "empty", "composer", "input", "send", "newchat", "settingsbtn", "settings",
       "closesettings", "system", "temperature", "tempval", "maxtokens", "apikey"]


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args):
    port = free_port()
    p = subprocess.Popen([BIN, "serve", MODEL, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                          "--kv-cache-memory", "8M", "--served-model-name", "tiny", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, ready = [], threading.Event()

    def reader():
        for line in p.stdout:
            lines.append(line)
            if "Application startup complete" in line:
                ready.set()

    threading.Thread(target=reader, daemon=True).start()
    if not ready.wait(120):
        p.kill()
        raise RuntimeError("no ready line: " + "".join(lines)[-2000:])
    return p, f"http://127.0.0.1:{port}", lines


def stop(p):
    p.send_signal(2)
    try:
        check(p.wait(60) == 0, "server exit status")
    except subprocess.TimeoutExpired:
        p.kill()
        check(False, "server did not exit on SIGINT")


def extract_script(html):
    m = re.findall(r"<script>(.*?)</script>", html, re.S)
    check(len(m) == 1, f"one inline script, got {len(m)}")
    return m[0] if m else ""


def check_page(url):
    r = requests.get(url + "/", timeout=30)
    check(r.status_code == 200, f"GET / status {r.status_code}")
    check(r.headers.get("Content-Type") == "text/html; charset=utf-8", f"content type {r.headers.get('Content-Type')}")
    check(r.headers.get("Cache-Control") == "no-cache", f"cache-control {r.headers.get('Cache-Control')}")
    check("connect-src 'self'" in r.headers.get("Content-Security-Policy", ""), "CSP")
    etag = r.headers.get("ETag", "")
    check(re.fullmatch(r'"[0-9a-f]{16}"', etag) is not None, f"etag {etag!r}")
    html = r.text
    with open(os.path.join(SRC, "src/server/ui/chat.html"), encoding="ascii") as f:
        check(html == f.read(), "served page differs from src/server/ui/chat.html (rerun scripts/embed-ui.sh)")
    check(html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>"), "html document")
    check(all(ord(c) < 128 for c in html), "page is ASCII")
    for i in IDS:
        check(f'id="{i}"' in html, f"element #{i} missing")
        check(f'$("{i}")' in html, f"script does not use #{i}")
    # offline: nothing fetched from elsewhere
    check(not re.search(r"https?://|//cdn|<link|\ssrc=|@import|url\(", html), "external resource in the page")
    for needle in ("/v1/models", "/v1/chat/completions", "include_usage", "AbortController", "localStorage",
                   "Bearer", "ttft_ms", "predicted_per_second", "viewport"):
        check(needle in html, f"page lacks {needle}")
    r2 = requests.get(url + "/index.html", timeout=30)
    check(r2.status_code == 200 and r2.text == html, "/index.html")
    r3 = requests.get(url + "/", headers={"If-None-Match": etag}, timeout=30)
    check(r3.status_code == 304 and not r3.content and r3.headers.get("ETag") == etag, f"304: {r3.status_code}")
    r4 = requests.get(url + "/", headers={"If-None-Match": '"0000000000000000"'}, timeout=30)
    check(r4.status_code == 200 and r4.text == html, "stale If-None-Match gets the page")
    r5 = requests.head(url + "/", timeout=30)
    check(r5.status_code == 200 and not r5.content and r5.headers.get("Content-Type", "").startswith("text/html"),
          f"HEAD: {r5.status_code}")
    r6 = requests.post(url + "/", data="x", timeout=30)
    check(r6.status_code == 405 and "GET" in r6.headers.get("Allow", ""), f"POST /: {r6.status_code}")
    check(requests.get(url + "/index.htm", timeout=30).status_code == 404, "/index.htm is 404")
    return html


# Runs the page's helpers in node; prints one JSON object of results.
NODE_HARNESS = r"""
const HUI = require(process.argv[2]);
const url = process.argv[3], key = process.argv[4] || "";
const out = {};
(async () => {
  out.esc = HUI.escapeHtml(`<img src=x onerror="a">&'`);
  out.md = HUI.renderMarkdown("a <b>**bold**</b> `x<y`\n```js\nif (a < b) { alert('</pre>') }\n```\ntail\n```\nopen <i>");
  const events = [];
  const text = 'data: {"a":1}\n\ndata: {"b":\n\r\ndata: [DONE]\r\n\r\n: comment\n\n';
  for (let cut = 0; cut <= text.length; cut++) {
    const got = [];
    const p = HUI.sseParser(d => got.push(d));
    p.feed(text.slice(0, cut)); p.feed(text.slice(cut));
    events.push(JSON.stringify(got));
  }
  out.sse = Array.from(new Set(events));
  out.err = HUI.errorText(400, '{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}');
  out.stats = HUI.statsText({ ttft_ms: 12.4, predicted_per_second: 99.96 },
                            { prompt_tokens: 5, completion_tokens: 7, prompt_tokens_details: { cached_tokens: 2 } }, "length");
  try { out.models = await HUI.listModels({ baseUrl: url, apiKey: key }); } catch (e) { out.models_err = e.message; }
  try { await HUI.listModels({ baseUrl: url, apiKey: key ? "wrong" : "" }); out.badkey = "ok"; }
  catch (e) { out.badkey = e.status + "|" + e.message; }
  const body = { model: "tiny", messages: [{ role: "user", content: "Hello there" }], temperature: 0, max_tokens: 24,
                 stream: true, stream_options: { include_usage: true } };
  let deltas = [];
  try {
    const r = await HUI.streamChat({ baseUrl: url, apiKey: key, body }, { onDelta: d => deltas.push(d) });
    out.stream = { text: deltas.join(""), n: deltas.length, finish: r.finish, usage: r.usage, timings: r.timings };
  } catch (e) { out.stream_err = e.message; }
  // the stop button: abort the fetch after the first token
  const ac = new AbortController();
  const long = Object.assign({}, body, { max_tokens: 3000, ignore_eos: true });
  let n = 0;
  try {
    await HUI.streamChat({ baseUrl: url, apiKey: key, body: long, signal: ac.signal },
                         { onDelta: () => { if (++n === 1) ac.abort(); } });
    out.abort = "not aborted";
  } catch (e) { out.abort = e.name; out.abort_deltas = n; }
  try {
    await HUI.streamChat({ baseUrl: url, apiKey: key, body: Object.assign({}, body, { temperature: -1 }) }, {});
    out.bad = "accepted";
  } catch (e) { out.bad = e.status + "|" + e.message; }
  console.log(JSON.stringify(out));
})().catch(e => { console.log(JSON.stringify({ fatal: String(e && e.stack || e) })); });
"""


def abort_count(url, headers):
    m = re.search(r'request_success_total\{finished_reason="abort"[^}]*\} ([0-9.]+)',
                  requests.get(url + "/metrics", headers=headers, timeout=30).text)
    return float(m.group(1)) if m else -1


def run_node(node, script, url, key, headers):
    with tempfile.TemporaryDirectory() as d:
        js = os.path.join(d, "page.js")
        with open(js, "w") as f:
            f.write(script)
        r = subprocess.run([node, "--check", js], capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, f"node --check: {r.stderr[-1000:]}")
        harness = os.path.join(d, "harness.js")
        with open(harness, "w") as f:
            f.write(NODE_HARNESS)
        before = abort_count(url, headers)
        r = subprocess.run([node, harness, js, url, key], capture_output=True, text=True, timeout=120)
        try:
            out = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            check(False, f"node harness output: {r.stdout[-500:]} {r.stderr[-1000:]}")
            return
    check("fatal" not in out, f"node harness: {out.get('fatal')}")
    check(out.get("esc") == "&lt;img src=x onerror=&quot;a&quot;&gt;&amp;&#39;", f"escape: {out.get('esc')}")
    md = out.get("md", "")
    check("<b>" not in md and "<i>" not in md and "&lt;b&gt;" in md, f"markdown escapes: {md}")
    check("<strong>bold</strong>" in md and "<code>x&lt;y</code>" in md, f"markdown inline: {md}")
    check('<pre><span class="lang">js</span><code>if (a &lt; b) { alert(&#39;&lt;/pre&gt;&#39;) }</code></pre>' in md,
          f"markdown fence: {md}")
    check(md.endswith("<pre><code>open &lt;i&gt;</code></pre>"), f"unclosed fence while streaming: {md}")
    check(out.get("sse") == ['["{\\"a\\":1}","{\\"b\\":","[DONE]"]'], f"sse splits: {out.get('sse')}")
    check(out.get("err") == "400 invalid_request_error: bad", f"errorText: {out.get('err')}")
    check(out.get("stats") == "TTFT 12 ms \u00b7 100.0 tok/s \u00b7 5 prompt (2 cached) \u00b7 7 generated \u00b7 "
          "cut at max tokens", f"statsText: {out.get('stats')}")
    check(out.get("models") == ["tiny"], f"listModels: {out.get('models')} {out.get('models_err')}")
    if key:
        check(str(out.get("badkey", "")).startswith("401|401 authentication_error: "), f"bad key: {out.get('badkey')}")
    s = out.get("stream") or {}
    check(s, f"stream failed: {out.get('stream_err')}")
    if s:
        ref = requests.post(url + "/v1/chat/completions", headers=headers, timeout=60, json={
            "model": "tiny", "messages": [{"role": "user", "content": "Hello there"}], "temperature": 0,
            "max_tokens": 24}).json()
        check(s["text"] == ref["choices"][0]["message"]["content"] and s["text"],
              f"streamed text {s['text']!r} != {ref['choices'][0]['message']['content']!r}")
        check(s["finish"] == ref["choices"][0]["finish_reason"], f"finish {s['finish']}")
        check(s["usage"] and s["usage"]["completion_tokens"] == ref["usage"]["completion_tokens"], f"usage {s['usage']}")
        t = s["timings"] or {}
        check(t.get("ttft_ms", 0) > 0 and t.get("predicted_per_second", 0) > 0, f"timings {t}")
    check(out.get("abort") == "AbortError" and out.get("abort_deltas", 0) >= 1, f"abort: {out.get('abort')}")
    after = before
    for _ in range(100):  # the server notices the closed connection on its next write
        after = abort_count(url, headers)
        if after > before:
            break
        time.sleep(0.05)
    check(after == before + 1, f"server did not abort the stopped request: {before} -> {after}")
    check(str(out.get("bad", "")).startswith("400|400 invalid_request_error: temperature"), f"error object: {out.get('bad')}")


def main():
    if not BIN or not os.access(BIN, os.X_OK):
        print("SKIP: HEARTH_BIN not built", file=sys.stderr)
        sys.exit(77)
    node = shutil.which("node")
    if not node:
        print("note: node not found, skipping the script checks", file=sys.stderr)

    # no key: the page and the API are open
    p, url, _ = start()
    try:
        html = check_page(url)
        if node:
            run_node(node, extract_script(html), url, "", {})
    finally:
        stop(p)

    # --api-key: the page wants the key too (Bearer, or Basic with the key as
    # password so a browser can open it); the API still takes only Bearer
    p, url, _ = start("--api-key", KEY)
    try:
        r = requests.get(url + "/", timeout=30)
        check(r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", f"/ no key: {r.status_code}")
        check(r.headers.get("WWW-Authenticate", "").startswith('Basic realm="hearth"'), "WWW-Authenticate")

        def basic(user, pw):
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}

        for h, want in ((basic("any", KEY), 200), (basic("", KEY), 200), (basic(KEY, "x"), 401),
                        (basic("any", KEY + "x"), 401), ({"Authorization": "Basic !!!"}, 401),
                        ({"Authorization": "Bearer " + KEY}, 200), ({"Authorization": "Bearer nope"}, 401)):
            r = requests.get(url + "/", headers=h, timeout=30)
            check(r.status_code == want, f"/ with {h}: {r.status_code} != {want}")
        r = requests.get(url + "/", headers=basic("u", KEY), timeout=30)
        check(r.headers.get("Cache-Control") == "private, no-cache", f"cache-control with key: {r.headers}")
        check(requests.get(url + "/index.html", headers=basic("u", KEY), timeout=30).status_code == 200, "index+basic")
        r = requests.get(url + "/v1/models", headers=basic("u", KEY), timeout=30)
        check(r.status_code == 401 and "WWW-Authenticate" not in r.headers, f"API with Basic: {r.status_code}")
        check(requests.get(url + "/nope", headers=basic("u", KEY), timeout=30).status_code == 401, "/nope + Basic")
        check(requests.get(url + "/health", timeout=30).status_code == 200, "/health without key")
        if node:
            page = requests.get(url + "/", headers=basic("u", KEY), timeout=30).text
            run_node(node, extract_script(page), url, KEY, {"Authorization": "Bearer " + KEY})
    finally:
        stop(p)

    if failures:
        print(f"{len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print("test_ui: ok")


if __name__ == "__main__":
    main()
