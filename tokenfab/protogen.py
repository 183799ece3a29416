"""Generate (or check) the Python code for ``protos/tokenfab/v1/*.proto``.

The generated modules are committed under ``tokenfab/v1`` so that a plain ``pip install`` works
without grpcio-tools. ``python -m tokenfab.protogen --check`` regenerates into a temporary folder
and fails when the committed files differ, which keeps the wire contract and the code in step
(run by ``make lint`` and by the test suite).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_PACKAGE = Path("tokenfab") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc for every .proto file into ``out_dir``; return the generated files."""
    from grpc_tools import protoc  # dev dependency, imported lazily

    protos = sorted((PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PROTO_PACKAGE}")
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out_dir / PROTO_PACKAGE).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def drift() -> list[str]:
    """Names of generated files that differ from (or are missing in) the committed tree."""
    committed = ROOT / PROTO_PACKAGE
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        problems = [
            p.name
            for p in fresh
            if not (committed / p.name).exists() or not filecmp.cmp(p, committed / p.name, shallow=False)
        ]
        fresh_names = {p.name for p in fresh}
        problems += [
            p.name
            for p in committed.iterdir()
            if p.name.endswith(GENERATED_SUFFIXES) and p.name not in fresh_names
        ]
    return sorted(problems)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail when committed code drifts")
    args = parser.parse_args(argv)
    if args.check:
        stale = drift()
        if stale:
            print("generated code is stale, run `make protos`: " + ", ".join(stale), file=sys.stderr)
            return 1
        print("generated code matches protos/")
        return 0
    for path in generate(ROOT):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
