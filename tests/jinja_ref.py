#!/usr/bin/env python3
"""jinja_ref.py - the reference for meshllm's Jinja interpreter: Python's jinja2 set up as
Hugging Face transformers renders chat templates (ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks, loopcontrols, {% generation %}, tojson with
ensure_ascii=False, raise_exception, strftime_now).

  jinja_ref.py TEMPLATE CONTEXT.json [--now EPOCH]     render one, text to stdout
  jinja_ref.py --batch LIST [--now EPOCH]              LIST lines: TEMPLATE CONTEXT OUT;
                                                       writes OUT, or OUT.err on an error
Exit 1 with the message on stderr when the template fails (single mode).
"""
import json
import sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationTag(Extension):
    """transformers' AssistantTracker without the tracking: {% generation %} renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_env(now):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return (datetime.fromtimestamp(now) if now else datetime.now()).strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(env, tmpl_path, ctx_path):
    with open(tmpl_path, encoding="utf-8", newline="") as f:
        src = f.read()
    with open(ctx_path, encoding="utf-8") as f:
        ctx = json.load(f)
    return env.from_string(src).render(**ctx)


def main(argv):
    now = 0
    if "--now" in argv:
        i = argv.index("--now")
        now = int(argv[i + 1])
        del argv[i:i + 2]
    env = make_env(now)
    if len(argv) == 3 and argv[1] == "--batch":
        with open(argv[2], encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                tmpl, ctx, out = line.split()
                try:
                    text = render(env, tmpl, ctx)
                    with open(out, "w", encoding="utf-8", newline="") as o:
                        o.write(text)
                except Exception as e:  # the template's own error: ours must fail too
                    with open(out + ".err", "w", encoding="utf-8") as o:
                        o.write("%s: %s\n" % (type(e).__name__, e))
        return 0
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    try:
        text = render(env, argv[1], argv[2])
    except Exception as e:
        sys.stderr.write("%s: %s\n" % (type(e).__name__, e))
        return 1
    sys.stdout.buffer.write(text.encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
