/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* crash-safety=: what the persistent bitmaps survive (persist.h). */
#ifndef CHECKPOINT_ENGINES_CRASH_SAFETY_H
#define CHECKPOINT_ENGINES_CRASH_SAFETY_H

enum crash_safety {
  CRASH_SAFETY_NONE,            /* saved at clean shutdown only */
  CRASH_SAFETY_PROCESS,         /* survives a kill -9 of nbdkit */
  CRASH_SAFETY_POWER,           /* survives a power cut too */
};

#endif /* CHECKPOINT_ENGINES_CRASH_SAFETY_H */
