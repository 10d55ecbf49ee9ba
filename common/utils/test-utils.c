/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Unit tests of the header-only helpers: vector.h, rounding.h and the
 * unique names of cleanup.h.
 */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cleanup.h"
#include "rounding.h"
#include "vector.h"
#include "test-check.h"

DEFINE_VECTOR_TYPE (int_vector, int);


static void
test_vector (void)
{
  int_vector v = empty_vector;
  size_t i;
  int ok = 1;

  for (i = 0; i < 1000; i++)
    ok &= int_vector_append (&v, (int) i) == 0;
  CHECK (ok && v.len == 1000 && v.cap >= 1000);
  for (i = 0; i < 1000; i++)
    ok &= v.ptr[i] == (int) i;
  CHECK (ok);

  int_vector_remove (&v, 0);
  int_vector_remove (&v, 500);          /* was 501 */
  int_vector_remove (&v, v.len - 1);    /* was 999 */
  CHECK (v.len == 997 && v.ptr[0] == 1 && v.ptr[499] == 500 &&
         v.ptr[500] == 502 && v.ptr[996] == 998);

  CHECK (int_vector_insert (&v, -1, 0) == 0 && v.ptr[0] == -1 &&
         v.ptr[1] == 1 && v.len == 998);
  CHECK (int_vector_insert (&v, -2, v.len) == 0 && v.ptr[v.len - 1] == -2);

  /* Reserve, then appends within it keep the array where it is. */
  CHECK (int_vector_reserve (&v, 5000) == 0 && v.cap - v.len >= 5000);
  {
    int *before = v.ptr;
    for (i = 0; i < 5000; i++)
      ok &= int_vector_append (&v, 7) == 0;
    CHECK (ok && v.ptr == before);
  }

  /* A request that cannot fit in memory fails and changes nothing. */
  {
    size_t len = v.len, cap = v.cap;
    errno = 0;
    CHECK (int_vector_reserve (&v, SIZE_MAX / 2) == -1 && errno == ENOMEM);
    CHECK (v.len == len && v.cap == cap);
  }

  int_vector_reset (&v);
  CHECK (v.ptr == NULL && v.len == 0 && v.cap == 0);
}

static void
test_minmax (void)
{
  int i = 3, j = 10;
  uint64_t big = UINT64_C (1) << 40;

  /* Each argument once. */
  CHECK (MIN (i++, j) == 3 && i == 4);
  CHECK (MAX (i, j++) == 10 && j == 11);
  CHECK (MIN (MIN (i, j), MAX (i, 2)) == 4);
  CHECK (MIN (big, (uint64_t) 5) == 5 && MAX (big, (uint64_t) 5) == big);
  CHECK (ROUND_UP (big + 1, 4096) == big + 4096);
  CHECK (ROUND_DOWN ((uint64_t) 8191, 4096) == 4096);
}

static pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;

static void
take_two (void)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&lock_a);
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&lock_b);
  CHECK (pthread_mutex_trylock (&lock_a) != 0 &&
         pthread_mutex_trylock (&lock_b) != 0);
}

static void
test_locks (void)
{
  take_two ();
  /* Both released at the end of the scope. */
  CHECK (pthread_mutex_trylock (&lock_a) == 0 &&
         pthread_mutex_trylock (&lock_b) == 0);
  pthread_mutex_unlock (&lock_a);
  pthread_mutex_unlock (&lock_b);
}

int
main (void)
{
  test_vector ();
  test_minmax ();
  test_locks ();
  return test_report ();
}
