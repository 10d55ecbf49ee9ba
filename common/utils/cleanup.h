/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Cleanup attributes for frees and locks, so that every return path
 * releases what it holds.
 */
#ifndef NC_CLEANUP_H
#define NC_CLEANUP_H

#include <pthread.h>
#include <stdlib.h>
#include <assert.h>

#include "unique-name.h"

extern void cleanup_free (void *ptr);
extern void cleanup_mutex_unlock (pthread_mutex_t **ptr);
extern void cleanup_close (int *fd);

#define CLEANUP_FREE __attribute__ ((cleanup (cleanup_free)))
/* Closes a descriptor (if >= 0) at the end of its scope. */
#define CLEANUP_CLOSE __attribute__ ((cleanup (cleanup_close)))

/* Holds MUTEX until the end of the enclosing scope.  The lock variable
 * gets a name of its own (unique-name.h), so two locks may be taken in
 * one scope.
 */
#define ACQUIRE_LOCK_FOR_CURRENT_SCOPE(mutex)                          \
  NC_ACQUIRE_LOCK_ ((mutex), NC_UNIQUE (_lock))
#define NC_ACQUIRE_LOCK_(mutex, var)                                    \
  __attribute__ ((cleanup (cleanup_mutex_unlock)))                      \
  pthread_mutex_t *var = (mutex);                                       \
  do {                                                                  \
    int _r = pthread_mutex_lock (var);                                  \
    assert (_r == 0);                                                   \
    (void) _r;                                                          \
  } while (0)

#endif /* NC_CLEANUP_H */
