#!/usr/bin/env python3
"""gen_schemas.py - writes N random JSON Schemas (deterministic from a seed) for
tests/grammar_schemas.test.sh: nested objects with required/optional properties, arrays with
bounds, enums, consts, anyOf, type lists, $ref to $defs, string lengths and formats.

  gen_schemas.py OUT_DIR [N] [SEED]

Strings always have a bound (maxLength, enum or a format): the test samples a random-weight
model, which picks tokens nearly uniformly, and an unbounded string would rarely end."""
import json
import os
import random
import sys


def string_schema(r):
    k = r.random()
    if k < 0.15:
        return {"type": "string", "format": r.choice(["date", "time", "date-time", "uuid"])}
    if k < 0.3:
        return {"enum": [f"opt-{r.randint(0, 99)}" for _ in range(r.randint(1, 5))]}
    lo = r.randint(0, 3)
    return {"type": "string", "minLength": lo, "maxLength": lo + r.randint(0, 10)}


def leaf(r):
    k = r.randint(0, 7)
    if k <= 2:
        return string_schema(r)
    if k == 3:
        return {"type": "integer"}
    if k == 4:
        return {"type": "number"}
    if k == 5:
        return {"type": "boolean"}
    if k == 6:
        return {"const": r.choice([1, "fixed", True, None, [1, 2], {"k": "v"}])}
    return {"enum": [r.choice([0, -3, 2.5, "a", "b\u00e9", None, False]) for _ in range(3)]}


def schema(r, depth, defs):
    k = r.random()
    if depth <= 0 or k < 0.35:
        return leaf(r)
    if k < 0.65:
        props = {}
        for i in range(r.randint(1, 5)):
            props[f"p{i}_{r.choice(['id', 'name', 'x', 'list', 'ok'])}"] = schema(r, depth - 1, defs)
        names = list(props)
        req = [n for n in names if r.random() < 0.6]
        o = {"type": "object", "properties": props, "required": req}
        if r.random() < 0.8:
            o["additionalProperties"] = False
        return o
    if k < 0.82:
        lo = r.randint(0, 2)
        a = {"type": "array", "items": schema(r, depth - 1, defs), "minItems": lo}
        if r.random() < 0.8:
            a["maxItems"] = lo + r.randint(0, 3)
        return a
    if k < 0.9:
        return {"anyOf": [schema(r, depth - 1, defs) for _ in range(r.randint(2, 3))]}
    if k < 0.95:
        return {"type": [r.choice(["integer", "boolean"]), "null"]}
    name = f"d{len(defs)}"
    defs[name] = schema(r, depth - 1, defs)
    return {"$ref": f"#/$defs/{name}"}


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 14
    r = random.Random(seed)
    os.makedirs(out, exist_ok=True)
    for i in range(n):
        defs = {}
        s = schema(r, 3, defs)
        if i % 3 == 0 and s.get("type") != "object":  # a third: an object at the top, as APIs send
            s = {"type": "object", "properties": {"value": s}, "required": ["value"],
                 "additionalProperties": False}
        if defs:
            s["$defs"] = defs
        with open(os.path.join(out, f"schema{i:02d}.json"), "w") as f:
            json.dump(s, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
