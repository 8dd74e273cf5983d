#!/opt/venv/bin/python
"""mc stand-in: the subcommands that docker-compose.yml runs, done through the S3 API of moto.

alias set NAME URL USER PASS | ready NAME | mb [--ignore-existing] NAME/BUCKET |
anonymous set none NAME/BUCKET | admin user add ... | admin policy attach ...
moto accepts any credentials, so the two admin commands only report what MinIO would do.
"""

import json
import sys
import urllib.request
from pathlib import Path

ALIASES = Path.home() / ".mc-standin.json"


def aliases() -> dict:
    return (
        json.loads(ALIASES.read_text()) if ALIASES.exists() else {"local": {"url": "http://127.0.0.1:9000"}}
    )


def client(name: str):
    import boto3  # here, not at the top: `mc ready` (the healthcheck) must answer fast

    a = aliases()[name]
    return boto3.client(
        "s3",
        endpoint_url=a["url"],
        aws_access_key_id=a.get("user", "x"),
        aws_secret_access_key=a.get("pass", "x"),
        region_name="us-east-1",
    )


def target(arg: str) -> tuple:
    name, _, bucket = arg.partition("/")
    return client(name), bucket


def run(args: list) -> int:
    if args[:2] == ["alias", "set"] and len(args) == 6:
        doc = aliases() | {args[2]: {"url": args[3], "user": args[4], "pass": args[5]}}
        ALIASES.write_text(json.dumps(doc))
        print(f"Added `{args[2]}` successfully.")
    elif args[:1] == ["ready"] and len(args) == 2:
        try:
            with urllib.request.urlopen(aliases()[args[1]]["url"] + "/", timeout=4) as r:
                return 0 if r.status == 200 else 1
        except OSError as e:
            print(f"mc: {args[1]} not ready: {e}", file=sys.stderr)
            return 1
    elif args[:1] == ["mb"]:
        s3, bucket = target(args[-1])
        if "--ignore-existing" in args and bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            print(f"Bucket `{args[-1]}` already exists.")
        else:
            s3.create_bucket(Bucket=bucket)
            print(f"Bucket created successfully `{args[-1]}`.")
    elif args[:3] == ["anonymous", "set", "none"] and len(args) == 4:
        s3, bucket = target(args[3])
        s3.delete_bucket_policy(Bucket=bucket)
        print(f"Access permission for `{args[3]}` is set to `private`")
    elif args[:3] in (["admin", "user", "add"], ["admin", "policy", "attach"]):
        print(f"mc stand-in: `{' '.join(args[:3])}` not needed (moto accepts any credentials)")
    else:
        print(f"mc stand-in: unsupported command {args}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
