#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Regenerates the committed protobuf-c code from the trimmed containerd
# protos here (needs protoc-c from protobuf-c-compiler).
set -eu
cd "$(dirname "$0")"
protoc-c --c_out=. -I. kc_types.proto kc_tasks.proto kc_containers.proto kc_snapshots.proto kc_misc.proto kc_content.proto
