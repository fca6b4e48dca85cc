"""Validates custom resources against their CustomResourceDefinition's schema, strictly.

    python validate_cr.py CRD.yaml CR.yaml...

The CRD's `openAPIV3Schema` is checked as the API server checks an object: with JSON Schema
(Draft 2020-12, the `jsonschema` package that kubernetes-validate brings), every object that lists
its `properties` closed to others (the API server prunes unknown fields, or rejects them under
strict field validation), `date-time` strings checked as RFC 3339. One line per object, `ok` or
`ERROR`; exit 1 when any object fails, 2 on bad input.
"""

import datetime
import sys

import jsonschema
import yaml


def closed(schema):
    """The schema with every object that lists its properties closed to unknown ones."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


class Loader(yaml.SafeLoader):
    """YAML as the API server reads it: a timestamp is a string, not a date."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def date_time(value):
    if not isinstance(value, str):
        return True
    # RFC 3339 with a zone, as Kubernetes writes and parses it.
    if not (value.endswith("Z") or (len(value) > 6 and value[-6] in "+-")):
        return False
    try:
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        crds = [d for d in yaml.load_all(f, Loader=Loader) if d and d.get("kind") == "CustomResourceDefinition"]
    schemas = {}
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            key = (spec["group"] + "/" + version["name"], spec["names"]["kind"])
            schemas[key] = closed(version["schema"]["openAPIV3Schema"])
    checker = jsonschema.FormatChecker()
    checker.checks("date-time")(date_time)
    failed = False
    for path in argv[2:]:
        with open(path) as f:
            objects = [d for d in yaml.load_all(f, Loader=Loader) if d]
        for obj in objects:
            key = (obj.get("apiVersion"), obj.get("kind"))
            name = "%s %s/%s" % (path, obj.get("kind"), (obj.get("metadata") or {}).get("name"))
            if key not in schemas:
                print("ERROR %s: no CRD defines %s" % (name, key))
                failed = True
                continue
            validator = jsonschema.Draft202012Validator(schemas[key], format_checker=checker)
            errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
            for e in errors:
                where = ".".join(str(p) for p in e.absolute_path)
                print("ERROR %s: %s: %s" % (name, where, e.message))
            if errors:
                failed = True
            else:
                print("ok %s" % name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
