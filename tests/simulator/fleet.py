"""Seed the simulator with a fleet described by a YAML or JSON spec; print the instances as JSON."""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from awssim import fleet  # noqa: E402  pylint: disable=wrong-import-position


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if path.endswith(".json"):
        return json.loads(text)
    import yaml  # pylint: disable=import-outside-toplevel
    return yaml.safe_load(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", default=os.environ.get("CMS_SIM_URL", "http://127.0.0.1:5000"))
    parser.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", "testing"))
    parser.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"))
    parser.add_argument("spec")
    args = parser.parse_args()
    try:
        instances = fleet.seed(_load(args.spec), args.endpoint, args.access_key, args.secret_key)
    except fleet.SpecError as exc:
        print(f"fleet.py: invalid spec: {exc}", file=sys.stderr)
        return 2
    json.dump({"instances": instances}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
