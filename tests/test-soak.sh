#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
# 60 s of the soak test (bench/soak.sh, which says what it runs and
# checks): data of every disk and export against the model, and no
# growth of nbdkit's descriptors, threads or RSS after warm-up.
source "${srcdir:-$(dirname "$0")}/functions.sh"
set -e

requires_built "$PLUGIN" "$FILTER"
exec bash "$abs_srcdir/../bench/soak.sh" 60 3
