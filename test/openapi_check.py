#!/usr/bin/env python3
"""openapi_check.py DOC ANSWERS: validate every recorded API answer against the OpenAPI document.

ANSWERS holds one JSON object a line: {"method", "path" (as requested, query allowed), "status",
"body" (text), "content_type"}. Each answer's path is matched to the document's path templates, its
method and status to an operation's response (or the operation's "default"), and a JSON body is
validated against that response's schema (JSON Schema 2020-12, as OpenAPI 3.1 says); a response
without content must come without a body; a path the document does not have must be a 404 in
the error shape. Prints one line per failure and a summary; exit status 1
when anything failed or nothing was checked, 77 when python3-jsonschema is not installed."""
import json
import re
import sys

try:
    import jsonschema
except ImportError:
    print("SKIP: python3-jsonschema is not installed")
    sys.exit(77)


def resolve(doc, node):
    """node with every local $ref replaced by what it names (the document has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = doc
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return resolve(doc, target)
        return {k: resolve(doc, v) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(doc, v) for v in node]
    return node


def templates(doc):
    out = []
    for tmpl in doc["paths"]:
        rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(tmpl)) + "$"
        out.append((re.compile(rx), tmpl))
    return out


def check(doc, tmpls, a):
    path = a["path"].split("?", 1)[0]
    tmpl = next((t for rx, t in tmpls if rx.match(path)), None)
    if tmpl is None:   # a path the API does not have: its 404 in the error shape
        if status_of(a) != "404":
            return "no path template matches and the answer is not 404"
        tmpl_resp = resolve(doc, doc["components"]["responses"]["NotFound"])
        return body_check(tmpl_resp, a)
    method = "get" if a["method"].upper() == "HEAD" else a["method"].lower()
    op = doc["paths"][tmpl].get(method)
    status = str(a["status"])
    if op is None:
        if status != "405":
            return "method not in the document and the answer is not 405"
        op = next(v for k, v in doc["paths"][tmpl].items() if k in ("get", "post", "patch", "delete"))
    resp = op["responses"].get(status) or op["responses"].get("default")
    if resp is None:
        return "status %s is not documented for %s %s" % (status, method.upper(), tmpl)
    return body_check(resolve(doc, resp), a)


def status_of(a):
    return str(a["status"])


def body_check(resp, a):
    content = resp.get("content")
    if not content:
        return None if a["body"] == "" else "a body where the document has none"
    if a["method"].upper() == "HEAD":
        return None
    ctype = (a.get("content_type") or "").split(";")[0].strip()
    media = next((v for k, v in content.items() if k.split(";")[0].strip() == ctype), None)
    if media is None:
        return "content type %r is not documented (%s)" % (ctype, ", ".join(content))
    if ctype != "application/json":
        return None
    try:
        body = json.loads(a["body"])
    except ValueError as e:
        return "body is not JSON: %s" % e
    errors = sorted(jsonschema.Draft202012Validator(media["schema"]).iter_errors(body), key=str)
    if errors:
        e = errors[0]
        return "schema: %s at %s" % (e.message[:200], "/".join(map(str, e.absolute_path)) or "top")
    return None


def main():
    doc = json.load(open(sys.argv[1]))
    jsonschema.Draft202012Validator.check_schema(resolve(doc, doc["components"]["schemas"]["Error"]))
    tmpls = templates(doc)
    checked = failed = 0
    for line in open(sys.argv[2]):
        if not line.strip():
            continue
        a = json.loads(line)
        checked += 1
        why = check(doc, tmpls, a)
        if why:
            failed += 1
            print("FAIL: %s %s -> %s: %s" % (a["method"], a["path"][:120], a["status"], why))
    print("%d answers checked against the OpenAPI document, %d failed" % (checked, failed))
    sys.exit(1 if failed or checked == 0 else 0)


main()
