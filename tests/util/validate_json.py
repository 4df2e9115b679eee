#!/usr/bin/env python3
"""validate_json.py - checks that OUTPUT is one JSON document valid for SCHEMA (python3-jsonschema,
draft 2020-12). Prints why not and exits 1.   validate_json.py SCHEMA.json OUTPUT"""
import json
import sys

import jsonschema

schema = json.load(open(sys.argv[1], encoding="utf-8"))
text = open(sys.argv[2], "rb").read().decode("utf-8")
try:
    doc = json.loads(text)
    jsonschema.Draft202012Validator(schema).validate(doc)
except (ValueError, jsonschema.ValidationError) as e:
    print(f"{sys.argv[2]}: {str(e).splitlines()[0]}\n  output: {text[:300]!r}")
    sys.exit(1)
