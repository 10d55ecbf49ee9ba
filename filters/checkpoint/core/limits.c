/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include "core/limits.h"

struct checkpoint_limits limits = {
  .bitmaps_per_disk = LIMIT_BITMAPS_PER_DISK,
  .checkpoints = LIMIT_CHECKPOINTS,
  .backups = LIMIT_BACKUPS,
  .backup_connections = LIMIT_BACKUP_CONNECTIONS,
  .jobs = LIMIT_JOBS,
};
