/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <pthread.h>
#include <unistd.h>

#include "cleanup.h"

void
cleanup_free (void *ptr)
{
  free (* (void **) ptr);
}

void
cleanup_mutex_unlock (pthread_mutex_t **ptr)
{
  int r = pthread_mutex_unlock (*ptr);
  assert (r == 0);
  (void) r;
}

/* Keeps errno, which usually holds the error being returned. */
void
cleanup_close (int *fd)
{
  int saved = errno;

  if (*fd >= 0)
    close (*fd);
  errno = saved;
}
