#!/usr/bin/env bash
# Regenerates the committed stubs from protos/funnel.proto (needs grpcio-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. protos/funnel.proto
