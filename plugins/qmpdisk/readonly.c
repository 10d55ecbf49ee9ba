/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Was nbdkit started with -r?  nbdkit 1.32 has no call that tells a
 * plugin, and a disk= file must then never be opened for writing nor
 * resized.  Read our own command line: -r, --readonly, --read-only, or
 * a group of nbdkit's flag letters holding r (e.g. -fr).
 */
#include <config.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "qmpdisk.h"

/* nbdkit's short options that take no argument. */
static bool
is_flag_group (const char *arg)
{
  size_t i;
  bool r = false;

  if (arg[0] != '-' || arg[1] == '-' || arg[1] == '\0')
    return false;
  for (i = 1; arg[i]; i++) {
    if (!strchr ("fnorsvV", arg[i]))
      return false;
    r |= arg[i] == 'r';
  }
  return r;
}

bool
server_readonly (void)
{
  CLEANUP_FREE char *buf = NULL;
  size_t len = 0, n;
  FILE *fp = fopen ("/proc/self/cmdline", "re");
  const char *arg;

  if (fp == NULL)
    return false;
  n = getdelim (&buf, &len, '\0', fp) >= 0 ? 1 : 0; /* skip argv[0] */
  while (n && getdelim (&buf, &len, '\0', fp) >= 0) {
    arg = buf;
    if (strcmp (arg, "--readonly") == 0 || strcmp (arg, "--read-only") == 0 ||
        is_flag_group (arg)) {
      fclose (fp);
      return true;
    }
  }
  fclose (fp);
  return false;
}
