/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* For unit tests: CHECK (cond) counts a check and, when it fails, says
 * which and where (and goes on); test_report () prints the closing line
 * "N passed, N failed" and gives main's exit status.
 */
#ifndef NC_TEST_CHECK_H
#define NC_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int test_passed, test_failed;

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (cond)                                                           \
      test_passed++;                                                    \
    else {                                                              \
      fprintf (stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
      test_failed++;                                                    \
    }                                                                   \
  } while (0)

static inline int
test_report (void)
{
  printf ("%d passed, %d failed\n", test_passed, test_failed);
  return test_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif /* NC_TEST_CHECK_H */
