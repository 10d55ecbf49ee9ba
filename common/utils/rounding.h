/* Alignment arithmetic on byte offsets, and MIN/MAX.  ALIGN must be a
 * power of two.  MIN and MAX evaluate each argument once (statement
 * expressions with names made unique by __COUNTER__), so MIN (x++, y)
 * means what it says; both are compared in their common type, as the
 * ?: operator converts them.
 */
#ifndef NC_ROUNDING_H
#define NC_ROUNDING_H

#include "unique-name.h"

#define IS_ALIGNED(x, align) (((x) & ((align) - 1)) == 0)
#define ROUND_DOWN(x, align) ((x) & ~((__typeof__ (x)) (align) - 1))
#define ROUND_UP(x, align) ROUND_DOWN ((x) + (align) - 1, (align))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))

#define NC_MINMAX_(a, b, op, ua, ub)                                    \
  ({                                                                    \
    __typeof__ (0 ? (a) : (b)) ua = (a);                                \
    __typeof__ (0 ? (a) : (b)) ub = (b);                                \
    ua op ub ? ua : ub;                                                 \
  })
#define MIN(a, b) NC_MINMAX_ ((a), (b), <, NC_UNIQUE (_min_a), NC_UNIQUE (_min_b))
#define MAX(a, b) NC_MINMAX_ ((a), (b), >, NC_UNIQUE (_max_a), NC_UNIQUE (_max_b))

#endif /* NC_ROUNDING_H */
